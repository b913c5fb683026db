package crdt

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

// Coalescing join announcements. A partition that heals joins every peer
// of one side to every peer of the other, and each join makes every
// replica announce its heads: with n peers, n announcements per wave of
// joins, each verified (sealed) and forwarded by every other peer. So a
// replica waits a random while after the joins (joinJitter, longer with
// more peers on the topic), which merges the joins of a wave into one
// announcement, and leaves it out when it announced all of its heads
// after the last join (a new block went out meanwhile): GossipSub
// flood-publishes a peer's own messages to every peer on the topic, the
// newcomers included (pubsub.WithFloodPublish, as a node runs it). Another peer's announcement of the same heads does
// not silence it: this replica forwards that one only to its GossipSub
// mesh, which a newcomer enters at a heartbeat up to a second later, and a
// newcomer may not accept that peer's announcements at all
// (Params.Member); go-ds-crdt's rebroadcast then skips heads it saw
// announced, so such a newcomer could wait for many intervals.
const (
	joinQuiet     = 50 * time.Millisecond // after the last join of a burst
	joinMost      = 500 * time.Millisecond
	joinJitterPer = 10 * time.Millisecond // random wait per peer on the topic, up to joinJitterMax
	joinJitterMax = time.Second
	heardMemory   = 4096 // heads remembered as announced
)

// joinJitter is the random wait added before a join announcement, with
// peers on the topic.
func joinJitter(peers int) time.Duration {
	spread := min(time.Duration(peers)*joinJitterPer, joinJitterMax)
	if spread <= 0 {
		return 0
	}
	return rand.N(spread)
}

// heard remembers when this replica last announced each head.
type heard struct {
	mu   sync.Mutex
	at   map[cid.Cid]time.Time
	ring []cid.Cid
	next int
}

func newHeard() *heard {
	return &heard{at: map[cid.Cid]time.Time{}, ring: make([]cid.Cid, heardMemory)}
}

// note records the heads of an announcement (an encoded CRDTBroadcast).
func (h *heard) note(data []byte) {
	var b pb.CRDTBroadcast
	if proto.Unmarshal(data, &b) != nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hd := range b.Heads {
		c, err := cid.Cast(hd.Cid)
		if err != nil {
			continue
		}
		if _, ok := h.at[c]; !ok {
			if old := h.ring[h.next]; old.Defined() {
				delete(h.at, old)
			}
			h.ring[h.next] = c
			h.next = (h.next + 1) % len(h.ring)
		}
		h.at[c] = now
	}
}

// all reports whether every one of heads was announced at or after since.
func (h *heard) all(heads []cid.Cid, since time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range heads {
		if at, ok := h.at[c]; !ok || at.Before(since) {
			return false
		}
	}
	return len(heads) > 0
}
