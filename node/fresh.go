package node

import (
	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// freshSet holds the signals the node delivered whose journal entry has
// not reached this replica yet (they came by gossip, or were published here
// and wait in the outbox), so that a subscription opened in that window
// gets them in its backlog. Bounded: past its size the oldest are
// forgotten (a subscription opened while more than that many deliveries
// wait for their journal entries may miss those). Only the loop uses it.
type freshSet struct {
	sigs map[causal.Ref]*signalmesh.Signal
	ring []causal.Ref
	next int
}

func newFreshSet(size int) *freshSet {
	return &freshSet{sigs: make(map[causal.Ref]*signalmesh.Signal), ring: make([]causal.Ref, size)}
}

func (f *freshSet) add(r causal.Ref, s *signalmesh.Signal) {
	if old := f.ring[f.next]; old != (causal.Ref{}) {
		delete(f.sigs, old)
	}
	f.ring[f.next] = r
	f.next = (f.next + 1) % len(f.ring)
	f.sigs[r] = s
}

// forget drops r: its journal entry arrived.
func (f *freshSet) forget(r causal.Ref) { delete(f.sigs, r) }

func (f *freshSet) all() map[causal.Ref]*signalmesh.Signal { return f.sigs }
