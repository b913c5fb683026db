package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// handOff records what Close waits for a connected peer to hold: the last
// own sequence number of each of the latest journal batches. The committer
// and the journaler write it, Close reads it.
type handOff struct {
	committed atomic.Uint64 // the last own sequence number durable in the outbox
	journaled atomic.Uint64 // the last own sequence number in the journal

	mu      sync.Mutex
	batches [64]uint64 // ring: the last own sequence number of each recent journal batch
	next    int
}

func (h *handOff) wrote(last uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batches[h.next] = last
	h.next = (h.next + 1) % len(h.batches)
	if last > h.journaled.Load() {
		h.journaled.Store(last)
	}
}

func (h *handOff) places(ref string) []place {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []place
	for _, seq := range h.batches {
		if seq > 0 {
			out = append(out, place{Origin: ref, Seq: seq})
		}
	}
	return out
}

// handOff waits, bounded by Params.HandOff, until what this node published
// before Close is in its journal and a connected peer holds the last
// entries of its latest journal batches and the adopted places: a peer
// that publishes and leaves at once does not take the only copy with it.
// With no peer connected, a node with bootstrap peers waits for one to
// come back (the redialer runs until Close ends), within the same bound.
func (n *Node) handOff(adopted []place) {
	if !n.live || n.p.HandOff < 0 || n.crashing() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.p.HandOff)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n.handed.journaled.Load() < n.handed.committed.Load() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			n.m.drop("handoff")
			n.log.Warn("node: close: the journal did not take the last signals in time; they are journaled at the next start")
			return
		}
	}
	ps := append(n.handed.places(n.selfRef), adopted...)
	if len(ps) == 0 {
		return // nothing to hand off
	}
	for len(n.ps.ListPeers(n.topicName("acks"))) == 0 {
		if len(n.cfg.Bootstrap) == 0 {
			return // a node on its own: nobody to hand it to, nobody expected
		}
		// Its peers are away (restarting, cut off): the redialer may
		// bring one back within the hand-off time.
		select {
		case <-tick.C:
		case <-ctx.Done():
			n.m.drop("handoff")
			n.log.Warn("node: close: no connected peer to hand this node's last journal deltas to (in memory, they go with it; on disk, they replicate at the next start)")
			return
		}
	}
	if err := n.awaitQuorum(ctx, nil, ps, 1, true, 0); err != nil { // a holder in memory too: see Close
		n.m.drop("handoff")
		n.log.Warn("node: close: no connected peer confirmed it holds this node's last journal deltas", "err", err)
	}
}
