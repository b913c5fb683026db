package crdt

import (
	"context"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh/internal/seal"
)

// Head announcements are checked before anything acts on them. The
// topic's validator rejects an announcement that does not decode, that
// names more than maxAnnouncedHeads heads or a head that is not a
// go-ds-crdt block id (CIDv1, dag-pb, SHA2-256), and ignores one from a
// peer Params.Member refuses. An announcer gets headRate heads a second
// (burst headBurst); past that its announcements are ignored (not
// forwarded, counted "heads_rate"): an honest replica announces its few
// heads every couple of seconds and on joins. Then the prefetcher holds at
// most perPeerQueued heads of one announcer queued or in flight, and
// fetches at most perPeerFetches of them at a time, so that heads nobody
// can serve tie up at most that many of its workers.
const (
	maxAnnouncedHeads = 1024
	headRate          = 64
	headBurst         = maxAnnouncedHeads
	maxAnnouncers     = 4096 // rate buckets kept; past it the map starts again
)

type bucket struct {
	tokens float64
	at     time.Time
}

type headsGuard struct {
	self     peer.ID
	sealed   bool // announcements are sealed (Params.Key)
	member   func(peer.ID) bool
	onReject func(reason string)

	mu      sync.Mutex
	buckets map[peer.ID]*bucket
	now     func() time.Time
}

func newHeadsGuard(p Params) *headsGuard {
	return &headsGuard{self: p.Self, sealed: p.Key != nil, member: p.Member, onReject: p.OnReject, buckets: map[peer.ID]*bucket{}, now: time.Now}
}

func (g *headsGuard) reject(reason string) {
	if g.onReject != nil {
		g.onReject(reason)
	}
}

// validCid reports whether c can name a go-ds-crdt block.
func validCid(c cid.Cid) bool {
	p := c.Prefix()
	return p.Version == 1 && p.Codec == cid.DagProtobuf && p.MhType == multihash.SHA2_256
}

// announcement is a head announcement's announcer and content (the
// validator's data for what the reader and go-ds-crdt take).
type announcement struct {
	from peer.ID
	data []byte
}

// announced returns what msg announces, as its validator found it.
func announced(msg *pubsub.Message) announcement {
	if a, ok := msg.ValidatorData.(announcement); ok {
		return a
	}
	return announcement{msg.GetFrom(), msg.Data}
}

func (g *headsGuard) validate(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	a := announcement{msg.GetFrom(), msg.Data}
	if g.sealed {
		var e *seal.Envelope
		var err error
		if msg.ReceivedFrom == g.self && g.self != "" {
			e, err = seal.Parse(msg.Data)
		} else {
			e, err = seal.Open(msg.GetTopic(), msg.Data)
		}
		if err != nil {
			g.reject("heads_seal")
			return pubsub.ValidationReject
		}
		a = announcement{e.Signer, e.Body}
	} else if a.from == "" {
		// No seal and no author: the PubSub signs nothing, and Params.Key
		// is missing. Nothing says who announced it.
		g.reject("heads_unauthenticated")
		return pubsub.ValidationReject
	}
	msg.ValidatorData = a
	if g.self != "" && a.from == g.self && msg.ReceivedFrom == g.self {
		return pubsub.ValidationAccept // our own announcement
	}
	return g.check(a.from, a.data)
}

// check vets an announcement from a peer that is not this replica: on the
// topic (after its seal) or on a stream (see direct.go).
func (g *headsGuard) check(from peer.ID, data []byte) pubsub.ValidationResult {
	if g.member != nil && !g.member(from) {
		g.reject("heads_not_member")
		return pubsub.ValidationIgnore // policy: the relay may have another list
	}
	var b pb.CRDTBroadcast
	if err := proto.Unmarshal(data, &b); err != nil || len(b.Heads) == 0 {
		g.reject("heads_decode")
		return pubsub.ValidationReject
	}
	if len(b.Heads) > maxAnnouncedHeads {
		g.reject("heads_too_many")
		return pubsub.ValidationReject
	}
	for _, h := range b.Heads {
		c, err := cid.Cast(h.Cid)
		if err != nil || !validCid(c) {
			g.reject("heads_cid")
			return pubsub.ValidationReject
		}
	}
	if !g.take(from, len(b.Heads)) {
		g.reject("heads_rate")
		return pubsub.ValidationIgnore
	}
	return pubsub.ValidationAccept
}

// take spends n of from's tokens; false when it has too few.
func (g *headsGuard) take(from peer.ID, n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	b := g.buckets[from]
	if b == nil {
		if len(g.buckets) >= maxAnnouncers {
			clear(g.buckets)
		}
		b = &bucket{tokens: headBurst, at: now}
		g.buckets[from] = b
	}
	b.tokens = min(headBurst, b.tokens+now.Sub(b.at).Seconds()*headRate)
	b.at = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true // (n is at most headBurst: the validator refuses larger announcements)
}
