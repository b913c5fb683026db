package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// freshSet holds the signals the node delivered whose journal entry has
// not reached this replica yet (they came by gossip, or were published here
// and wait in the outbox), so that a subscription opened in that window
// gets them in its backlog. Bounded: past its size the oldest are
// forgotten (a subscription opened while more than that many deliveries
// wait for their journal entries may miss those). Only the loop uses it.
//
// It also keeps the last signals (at least settledSize, and two journal
// deltas' worth) that left it (their journal entry arrived, or they were
// handed to the adopter) or that the core released from the journal, for
// reads: go-ds-crdt announces an entry to the put hook before it commits
// it, so for a moment a signal is neither fresh nor readable from the
// journal. (A signal that came first through the put hook, an entry of a
// remote delta or one the adopter wrote after a restart, was never fresh:
// delivered before a Subscribe and read from the journal by its backlog
// before the commit, it was missed.)
type freshSet struct {
	sigs map[causal.Ref]freshSig
	ring []causal.Ref
	next int

	settled     map[causal.Ref]*signalmesh.Signal
	settledRing []settledRef
	settledNext int

	past func(*signalmesh.Signal) bool // past retention (nil: none)

	// byCause indexes sigs and settled by causeid: for each, the refs of
	// the signals naming it, each with how many of the two hold it (1 or
	// 2), so that caused costs what it finds.
	byCause map[string]map[causal.Ref]int
}

const settledSize = 4096

// settledRef is a place in the settled ring: a signal's ref and its
// causeid, kept so that the one it evicts, settledSize deliveries later,
// is taken out of byCause without reading that signal again (long out of
// the processor's caches by then).
type settledRef struct {
	r     causal.Ref
	cause string
}

type freshSig struct {
	s      *signalmesh.Signal
	at     time.Time
	slot   int // its place in the ring
	warned bool
}

func newFreshSet(size, settled int) *freshSet {
	return &freshSet{sigs: make(map[causal.Ref]freshSig), ring: make([]causal.Ref, size),
		settled: make(map[causal.Ref]*signalmesh.Signal), settledRing: make([]settledRef, max(settled, settledSize)),
		byCause: make(map[string]map[causal.Ref]int)}
}

// count adds d to what holds s, at r, in byCause.
func (f *freshSet) count(r causal.Ref, s *signalmesh.Signal, d int) { f.countCause(r, s.CauseID(), d) }

// countCause is count for a signal whose causeid is c.
func (f *freshSet) countCause(r causal.Ref, c string, d int) {
	if c == "" {
		return
	}
	refs := f.byCause[c]
	if refs == nil {
		refs = map[causal.Ref]int{}
		f.byCause[c] = refs
	}
	if refs[r] += d; refs[r] <= 0 {
		delete(refs, r)
		if len(refs) == 0 {
			delete(f.byCause, c)
		}
	}
}

// settle keeps s, which left the set, for reads for a while.
func (f *freshSet) settle(r causal.Ref, s *signalmesh.Signal) {
	if _, ok := f.settled[r]; ok {
		return
	}
	if old := f.settledRing[f.settledNext]; old.r != (causal.Ref{}) {
		// Its place in the ring and its entry in settled come and go
		// together (a signal settled already is not settled again), so
		// the entry is there, with this causeid.
		f.countCause(old.r, old.cause, -1)
		delete(f.settled, old.r)
	}
	c := s.CauseID()
	f.settledRing[f.settledNext] = settledRef{r, c}
	f.settledNext = (f.settledNext + 1) % len(f.settledRing)
	f.settled[r] = s
	f.countCause(r, c, 1)
}

// readable returns the signals reads must see beside the journal, with
// the given id (all of them for ""), fresh and lately settled. The listing
// of all of them leaves out what the view says is past retention, as the
// journal's listing does (a lookup by id finds it still).
func (f *freshSet) readable(id string) []*signalmesh.Signal {
	out := f.list(id)
	if id == "" && f.past != nil {
		out = slices.DeleteFunc(out, f.past)
	}
	return out
}

// list is readable without the view's retention: every fresh and lately
// settled signal with the given id (all of them for "").
func (f *freshSet) list(id string) []*signalmesh.Signal {
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

// caused returns, by cause, the signals of readable("") whose causeid is
// one of causes (through byCause: no other signal is read).
func (f *freshSet) caused(causes map[string]bool) map[string][]*signalmesh.Signal {
	by := map[string][]*signalmesh.Signal{}
	for c := range causes {
		for r := range f.byCause[c] {
			s := f.settled[r]
			if e, ok := f.sigs[r]; ok {
				s = e.s
			}
			if s != nil && s.CauseID() == c && (f.past == nil || !f.past(s)) {
				by[c] = append(by[c], s)
			}
		}
	}
	return by
}

func (f *freshSet) add(r causal.Ref, s *signalmesh.Signal, now time.Time) {
	if old := f.ring[f.next]; old != (causal.Ref{}) {
		if e, ok := f.sigs[old]; ok && e.slot == f.next { // not an entry added again since, at another slot
			delete(f.sigs, old)
			f.count(old, e.s, -1)
		}
	}
	if e, ok := f.sigs[r]; ok { // added again
		f.count(r, e.s, -1)
	}
	f.ring[f.next] = r
	f.sigs[r] = freshSig{s: s, at: now, slot: f.next}
	f.count(r, s, 1)
	f.next = (f.next + 1) % len(f.ring)
}

// stale returns the refs of origin self added before cutoff.
func (f *freshSet) stale(cutoff time.Time, self string) []causal.Ref {
	var out []causal.Ref
	for r, e := range f.sigs {
		if r.Origin == self && e.at.Before(cutoff) {
			out = append(out, r)
		}
	}
	return out
}

// forget drops r: its journal entry arrived. It reports whether r was
// there.
func (f *freshSet) forget(r causal.Ref) bool {
	e, ok := f.sigs[r]
	if ok {
		delete(f.sigs, r)
		f.count(r, e.s, -1)
		f.settle(r, e.s)
	}
	return ok
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
			f.count(r, e.s, -1)
			f.settle(r, e.s)
		}
	}
	return out
}

// The durable side of the fresh set. A signal of another origin that the
// node delivered before its journal entry arrived is written to a local
// (not replicated) part of the store before any handler sees it, without
// an fsync: the kernel keeps the write when the process is killed. Its
// key goes when the journal entry arrives or the node adopts it; at the
// next start, what is left (the node was killed in between) is adopted
// first thing, so a signal a handler saw ends in the journal even if both
// its origin and this node die before anyone fetched it.

func (n *Node) freshKey(r causal.Ref) ds.Key {
	return ds.RawKey(fmt.Sprintf("/signalmesh/%s/fresh/%s/%016x", n.cfg.Mesh, r.Origin, r.Seq))
}

// keepFresh writes sigs to the durable fresh area: not on an in-memory
// node, whose store dies with the process (there is no next start to adopt
// them at; Close adopts what is still fresh from the fresh set).
func (n *Node) keepFresh(sigs []*signalmesh.Signal) {
	if n.volatile {
		return
	}
	ctx := context.WithoutCancel(n.ctx)
	b, err := n.store.Batch(ctx)
	if err == nil {
		for _, s := range sigs {
			w, werr := s.MarshalBinary()
			if werr != nil {
				continue
			}
			origin, seq := journal.Place(s)
			if err = b.Put(ctx, n.freshKey(causal.Ref{Origin: origin, Seq: seq}), w); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = b.Commit(ctx)
	}
	if err != nil {
		n.m.drop("fresh_write")
		n.log.Error("node: keep delivered signals until they are journaled", "err", err)
	}
}

// dropFresh deletes refs from the durable fresh area.
func (n *Node) dropFresh(refs []causal.Ref) {
	if len(refs) == 0 || n.volatile {
		return
	}
	ctx := context.WithoutCancel(n.ctx)
	b, err := n.store.Batch(ctx)
	if err == nil {
		for _, r := range refs {
			if err = b.Delete(ctx, n.freshKey(r)); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = b.Commit(ctx)
	}
	if err != nil {
		n.log.Warn("node: clear delivered signals that reached the journal", "err", err)
	}
}

// readFresh returns what the durable fresh area holds that the journal
// does not (the last process was killed before they reached it), and
// clears the rest.
func (n *Node) readFresh(ctx context.Context) ([]*signalmesh.Signal, error) {
	res, err := n.store.Query(ctx, query.Query{Prefix: "/signalmesh/" + n.cfg.Mesh + "/fresh"})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var orphans []*signalmesh.Signal
	var done []causal.Ref
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		s, err := signalmesh.DecodeBinary(r.Value, signalmesh.Limits{})
		if err != nil {
			_ = n.store.Delete(ctx, ds.RawKey(r.Key))
			continue
		}
		origin, seq := journal.Place(s)
		if ok, err := n.repl.Has(ctx, journal.SignalKey(origin, seq)); err == nil && ok {
			done = append(done, causal.Ref{Origin: origin, Seq: seq})
			continue
		}
		orphans = append(orphans, s)
	}
	n.dropFresh(done)
	return orphans, nil
}
