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
//
// It also keeps the last settledSize signals that left it (their journal
// entry arrived, or they were handed to the adopter) for reads: go-ds-crdt
// announces an entry to the put hook before it commits it, so for a moment
// a signal is neither fresh nor readable from the journal.
type freshSet struct {
	sigs map[causal.Ref]freshSig
	ring []causal.Ref
	next int

	settled     map[causal.Ref]*signalmesh.Signal
	settledRing []causal.Ref
	settledNext int
}

const settledSize = 4096

type freshSig struct {
	s  *signalmesh.Signal
	at time.Time
}

func newFreshSet(size int) *freshSet {
	return &freshSet{sigs: make(map[causal.Ref]freshSig), ring: make([]causal.Ref, size),
		settled: make(map[causal.Ref]*signalmesh.Signal), settledRing: make([]causal.Ref, settledSize)}
}

// settle keeps s, which left the set, for reads for a while.
func (f *freshSet) settle(r causal.Ref, s *signalmesh.Signal) {
	if _, ok := f.settled[r]; ok {
		return
	}
	if old := f.settledRing[f.settledNext]; old != (causal.Ref{}) {
		delete(f.settled, old)
	}
	f.settledRing[f.settledNext] = r
	f.settledNext = (f.settledNext + 1) % len(f.settledRing)
	f.settled[r] = s
}

// readable returns the signals reads must see beside the journal, with
// the given id (all of them for ""), fresh and lately settled.
func (f *freshSet) readable(id string) []*signalmesh.Signal {
	var out []*signalmesh.Signal
	seen := map[causal.Ref]bool{}
	for r, e := range f.sigs {
		if id == "" || e.s.ID == id {
			out = append(out, e.s)
			seen[r] = true
		}
	}
	for r, s := range f.settled {
		if !seen[r] && (id == "" || s.ID == id) {
			out = append(out, s)
		}
	}
	return out
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
func (f *freshSet) forget(r causal.Ref) {
	if e, ok := f.sigs[r]; ok {
		delete(f.sigs, r)
		f.settle(r, e.s)
	}
}

func (f *freshSet) all() map[causal.Ref]*signalmesh.Signal {
	out := make(map[causal.Ref]*signalmesh.Signal, len(f.sigs))
	for r, e := range f.sigs {
		out[r] = e.s
	}
	return out
}

// take removes and returns the signals added before cutoff (all of them
// with a zero cutoff), at most max, except those of origin self: this
// node's own signals wait in its outbox, which journals them.
func (f *freshSet) take(cutoff time.Time, self string, max int) []*signalmesh.Signal {
	var out []*signalmesh.Signal
	for r, e := range f.sigs {
		if len(out) == max {
			break
		}
		if r.Origin != self && (cutoff.IsZero() || e.at.Before(cutoff)) {
			out = append(out, e.s)
			delete(f.sigs, r)
			f.settle(r, e.s)
		}
	}
	return out
}
