package node

import (
	"time"

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
	sigs map[causal.Ref]freshSig
	ring []causal.Ref
	next int
}

type freshSig struct {
	s  *signalmesh.Signal
	at time.Time
}

func newFreshSet(size int) *freshSet {
	return &freshSet{sigs: make(map[causal.Ref]freshSig), ring: make([]causal.Ref, size)}
}

func (f *freshSet) add(r causal.Ref, s *signalmesh.Signal, now time.Time) {
	if old := f.ring[f.next]; old != (causal.Ref{}) {
		delete(f.sigs, old)
	}
	f.ring[f.next] = r
	f.next = (f.next + 1) % len(f.ring)
	f.sigs[r] = freshSig{s, now}
}

// forget drops r: its journal entry arrived.
func (f *freshSet) forget(r causal.Ref) { delete(f.sigs, r) }

func (f *freshSet) all() map[causal.Ref]*signalmesh.Signal {
	out := make(map[causal.Ref]*signalmesh.Signal, len(f.sigs))
	for r, e := range f.sigs {
		out[r] = e.s
	}
	return out
}

// take removes and returns the signals added before cutoff (all of them
// with a zero cutoff), at most max.
func (f *freshSet) take(cutoff time.Time, max int) []*signalmesh.Signal {
	var out []*signalmesh.Signal
	for r, e := range f.sigs {
		if len(out) == max {
			break
		}
		if cutoff.IsZero() || e.at.Before(cutoff) {
			out = append(out, e.s)
			delete(f.sigs, r)
		}
	}
	return out
}
