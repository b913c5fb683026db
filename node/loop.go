package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

type via int

const (
	viaGossip via = iota
	viaJournal
	viaLocal // published here
)

type inbound struct {
	s     *signalmesh.Signal
	via   via
	meta  *causal.Meta // when the sender read it already: the put hook (via journal) or validate (via gossip)
	known *causal.Ref  // only this: a journaled signal the core lacks room for
}

// stampBase is what the committer stamps new signals with: the causal
// core's frontier (the direct dependencies) and the highest Lamport time
// delivered. The loop publishes it after each release.
type stampBase struct {
	deps      []causal.Ref
	lamport   uint64
	truncated int
}

// send hands a signal to the loop, waiting while the inbox is full. It
// returns false when the node is closing.
func (n *Node) send(in inbound) bool {
	select {
	case n.inbox <- in:
		return true
	case <-n.ctx.Done():
		return false
	}
}

// do runs f on the loop and waits for it.
func (n *Node) do(ctx context.Context, f func()) error {
	defer n.reenter(ctx)() // called by an OverflowBlock handler: the loop must not wait for it
	done := make(chan struct{})
	select {
	case n.reqs <- func() { f(); close(done) }:
	case <-n.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-n.ctx.Done():
		return ErrClosed
	}
}

// releasing reports whether Close has begun: from then on the loop waits
// for no OverflowBlock subscription.
func (n *Node) releasing() bool {
	select {
	case <-n.unblock:
		return true
	default:
		return false
	}
}

// pullBudget is how many journal entries one pull step reads before the
// loop looks at its other work.
const pullBudget = 1024

// always is a closed channel: a select case on it is always ready.
var always = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// loop owns the causal core: every signal, from gossip, from the journal
// or published locally, goes through it, and released signals are
// dispatched to subscriptions in causal order. When the core's buffer
// overflowed, the loop pulls what the core lacks from the journal, a
// bounded step at a time between its other work.
func (n *Node) loop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.p.Resync)
	defer tick.Stop()
	for {
		var pull chan struct{}
		if n.pulling {
			pull = always
		}
		select {
		case <-n.ctx.Done():
			return
		case in := <-n.inbox:
			n.handle(in)
		case f := <-n.reqs:
			f()
		case <-pull:
			var err error
			if n.pulling, err = n.pullStep(n.ctx, pullBudget); err != nil && n.ctx.Err() == nil {
				n.log.Warn("node: pull from the journal", "err", err)
			}
		case <-tick.C:
			n.deliver(n.core.Tick(time.Now().UnixNano()))
			if n.core.Len() > 0 || n.pullWanted || len(n.core.Pull()) > 0 {
				n.pullWanted, n.pulling = false, true
			}
			n.adoptOld()
			n.checkCauses()
			n.sweepFresh()
			n.flushIndex()
		}
		if n.m.hist != nil {
			n.heal.note(n.m.hist, n.core.Len() > 0 || n.pulling || n.pullWanted, time.Now())
		}
	}
}

// adoptOld hands the adopter the signals this node delivered whose journal
// entry has not arrived within Params.Adopt: their origin may be gone (an
// edge peer that published and left) or its delta lost; journaled here,
// they reach every replica from this one. When the adopter is busy they
// wait for the next tick.
func (n *Node) adoptOld() {
	if len(n.fresh.sigs) == 0 || n.p.Adopt < 0 {
		return
	}
	// This node's own signals are journaled from its outbox; one whose
	// journal entry went by unseen (it arrived while the core had no room,
	// say) is let go once the journal holds it.
	for _, r := range n.fresh.stale(time.Now().Add(-n.p.Adopt), n.selfRef) {
		if n.fresh.past != nil && n.fresh.past(n.fresh.sigs[r].s) {
			n.fresh.forget(r) // past retention: pruned, or to be (not found again, not worth holding)
		} else if ok, err := n.repl.Has(n.ctx, journal.SignalKey(r.Origin, r.Seq)); err == nil && ok {
			n.fresh.forget(r)
		} else if e := n.fresh.sigs[r]; time.Since(e.at) > 3*n.p.Adopt && !e.warned {
			e.warned = true
			n.fresh.sigs[r] = e
			n.log.Warn("node: an own signal is still not in the journal", "ref", r.String(), "since", e.at)
		}
	}
	sigs := n.fresh.take(time.Now().Add(-n.p.Adopt), n.selfRef, n.p.JournalBatch)
	if len(sigs) == 0 {
		return
	}
	select {
	case n.adoptQ <- sigs:
	default:
		for _, s := range sigs { // next time
			if m, err := journal.MetaOf(s); err == nil {
				n.fresh.add(m.Ref(), s, time.Now().Add(-n.p.Adopt))
			}
		}
	}
}

// adopter journals what adoptOld hands it (the same key and value as the
// origin's entry: go-ds-crdt keeps one), until the node closes.
func (n *Node) adopter() {
	defer n.wg.Done()
	if len(n.orphans) > 0 { // delivered by the last process, never journaled
		if committed, err := n.adopt(n.orphans); err != nil {
			n.log.Warn("node: adopt what the last process delivered", "err", err)
			if !committed {
				n.readopt(n.orphans)
			}
		}
		n.orphans = nil
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case sigs := <-n.adoptQ:
			committed, err := n.adopt(sigs)
			if err != nil && n.ctx.Err() == nil {
				n.log.Warn("node: adopt signals into the journal", "err", err)
			}
			if err != nil && !committed {
				n.readopt(sigs)
			}
		}
	}
}

// readopt hands signals whose adoption failed back to the fresh set: the
// next try is one Params.Adopt later (and none for a signal whose journal
// entry arrived meanwhile). Until the node closes, a delivered signal is
// never dropped from the set because a store write failed.
func (n *Node) readopt(sigs []*signalmesh.Signal) {
	_ = n.do(n.ctx, func() {
		for _, s := range sigs {
			m, err := journal.MetaOf(s)
			if err != nil {
				continue
			}
			if ok, err := n.repl.Has(n.ctx, journal.SignalKey(m.Origin, m.Seq)); err == nil && ok {
				continue
			}
			n.fresh.add(m.Ref(), s, time.Now())
		}
	})
}

// testAdoptFault, when set (tests only), makes an adoption fail before it
// writes anything.
var testAdoptFault func() error

// adopt journals sigs in one batch; committed reports whether the batch
// was committed (a later Sync may still fail).
func (n *Node) adopt(sigs []*signalmesh.Signal) (committed bool, _ error) {
	if testAdoptFault != nil {
		if err := testAdoptFault(); err != nil {
			return false, err
		}
	}
	ctx := context.WithoutCancel(n.ctx)
	b, err := n.repl.Batch(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range sigs {
		w, err := s.MarshalBinary()
		if err != nil {
			continue
		}
		e, _, err := journal.Entries(s, w)
		if err != nil {
			continue
		}
		if err := b.Put(ctx, e.Key, e.Value); err != nil {
			return false, err
		}
	}
	if err := b.Commit(ctx); err != nil {
		return false, err
	}
	n.m.adopted.Add(int64(len(sigs)))
	if err := n.repl.Sync(ctx, ds.NewKey("/")); err != nil {
		return true, err
	}
	refs := make([]causal.Ref, len(sigs))
	for i, s := range sigs {
		refs[i].Origin, refs[i].Seq = journal.Place(s)
	}
	n.dropFresh(refs)
	return true, nil
}

// checkCauses reports signals that have waited longer than CauseTimeout for
// a cause, once per episode (until the buffer empties).
func (n *Node) checkCauses() {
	switch {
	case n.core.Len() == 0:
		n.waitingSince, n.reported = time.Time{}, false
	case n.waitingSince.IsZero():
		n.waitingSince = time.Now()
	case !n.reported && time.Since(n.waitingSince) > n.p.CauseTimeout:
		n.reported = true
		n.m.drop("missing_cause")
		gaps, causes := n.core.Missing()
		n.log.Warn("node: signals wait for causes that have not arrived", "waiting", n.core.Len(),
			"for", time.Since(n.waitingSince).Round(time.Millisecond), "missing", fmt.Sprint(gaps), "causes", fmt.Sprint(causes))
	}
}

func (n *Node) handle(in inbound) {
	if in.known != nil {
		n.forgetFresh(*in.known)
		n.core.Know(*in.known)
		n.pullWanted = true
		return
	}
	if in.meta != nil {
		n.noteOrigin(in.meta.Origin, in.s)
		if in.via == viaJournal {
			_ = n.offerJournaled(*in.meta, in.s)
		} else {
			_ = n.offer(*in.meta, in.s)
		}
		return
	}
	m, err := journal.MetaOf(in.s)
	if errors.Is(err, journal.ErrNoStamp) {
		// Weak: no causal order, delivered as it comes, once per identity
		// while the core remembers it (a retry on another peer is not
		// delivered twice). It is not a cause: an effect's causeid waits for
		// a journaled signal (anyone may gossip a Weak signal with any id).
		if n.core.Weak(in.s.Source, in.s.ID, journal.ContentDigest(in.s)) {
			n.m.deduped.Add(1)
			return
		}
		n.dispatch(in.s, markNone)
		return
	}
	if err != nil {
		n.m.reject("stamp")
		return
	}
	n.noteOrigin(m.Origin, in.s)
	_ = n.offer(m, in.s)
}

// noteOrigin remembers the peer id of an origin's ref, for Status.
func (n *Node) noteOrigin(ref string, s *signalmesh.Signal) {
	if _, ok := n.origins[ref]; !ok {
		n.origins[ref], _ = s.Extensions[signalmesh.ExtPeer].(string)
	}
}

// offer adds a signal to the core and delivers what it releases. It
// returns Add's error: nil when the signal was new to the core (released
// or waiting).
func (n *Node) offer(m causal.Meta, s *signalmesh.Signal) error {
	out, err := n.core.Add(m, s, time.Now().UnixNano())
	switch {
	case errors.Is(err, causal.ErrDuplicate):
		n.m.deduped.Add(1)
	case errors.Is(err, causal.ErrFull):
		n.m.drop("causal_buffer_full")
		n.pullWanted = true
		n.refusing.Store(true)
	case err != nil:
		n.m.reject("stamp")
	}
	n.deliver(out)
	return err
}

// offerJournaled offers a signal read from the journal: when the core
// releases it, it is journaled already, so it is not kept as fresh.
func (n *Node) offerJournaled(m causal.Meta, s *signalmesh.Signal) error {
	r := m.Ref()
	if m.Seq <= n.core.Settled(m.Origin) {
		// Delivered already (by gossip, most often): what the core would
		// say, without its bookkeeping.
		n.m.deduped.Add(1)
		n.forgetFresh(r)
		return causal.ErrDuplicate
	}
	// Marked in journalRefs only if it waits after the offer: most are
	// released at once, and deliver knows this one by journalRef, which
	// spares a map write, read and delete per signal.
	n.journalRef = r
	err := n.offer(m, s)
	n.journalRef = causal.Ref{}
	if (err != nil && !errors.Is(err, causal.ErrDuplicate)) || n.core.DeliveredOf(m.Origin) >= m.Seq {
		if len(n.journalRefs) > 0 {
			delete(n.journalRefs, r) // delivered, or refused (pulled again): nothing waits
		}
	} else {
		n.journalRefs[r] = struct{}{} // a duplicate of a waiting copy (it came by gossip) is marked too: journaled when released
	}
	n.forgetFresh(r)
	return err
}

// forgetFresh drops r from the fresh set (its journal entry arrived), and
// from the durable fresh area at the next tick.
func (n *Node) forgetFresh(r causal.Ref) {
	if n.fresh.forget(r) && r.Origin != n.selfRef && !n.volatile {
		n.freshDel = append(n.freshDel, r)
	}
}

// sweepFresh clears what the durable fresh area no longer needs, and the
// journal marks of signals the core released some other way.
func (n *Node) sweepFresh() {
	n.dropFresh(n.freshDel)
	n.freshDel = n.freshDel[:0]
	for r := range n.journalRefs {
		if n.core.DeliveredOf(r.Origin) >= r.Seq {
			delete(n.journalRefs, r)
		}
	}
}

// deliver dispatches released signals, counts what the core says of them
// and publishes the new stamp base. Signals of other origins that did not
// come from the journal are made durable here first (see keepFresh).
func (n *Node) deliver(out []causal.Release[*signalmesh.Signal]) {
	if len(out) == 0 {
		return
	}
	journaled := make([]bool, len(out))
	var keep []*signalmesh.Signal
	for i, r := range out {
		ref := r.Meta.Ref()
		journal := ref == n.journalRef // offerJournaled clears its mark, if it had one
		if !journal {
			if _, journal = n.journalRefs[ref]; journal {
				delete(n.journalRefs, ref)
			}
		}
		if journal {
			journaled[i] = true
			// Its entry came through the put hook, maybe before go-ds-crdt
			// committed it: readable until then (a Subscribe's backlog).
			n.fresh.settle(ref, r.V)
		} else if ref.Origin != n.selfRef {
			keep = append(keep, r.V)
		}
	}
	if len(keep) > 0 && n.p.Adopt >= 0 {
		n.keepFresh(keep)
	}
	for i, r := range out {
		if o := r.Meta.Origin; i == 0 || o != out[i-1].Meta.Origin {
			n.settled.set(o, n.core.Settled(o))
		}
	}
	// First the stamp base: a handler that publishes in reaction to one
	// of these signals must name it (the core has delivered them all).
	n.publishBase()
	for i, r := range out {
		if r.CauseLost {
			n.m.drop("cause_not_found")
			n.log.Warn("node: delivered a signal without its cause, which did not arrive within CauseWait",
				"signal", r.V.ID, "cause", r.Meta.Cause)
		}
		if r.Conflict {
			n.m.conflicts.Add(1)
			n.log.Warn("node: two different signals with one (source, id)", "source", r.V.Source, "id", r.V.ID)
		}
		if r.LamportClamped {
			n.m.reject("lamport")
		}
		if !r.Decision.Zero() {
			n.saveDecision(r.Meta.Ref(), r.Decision)
		}
		if r.DepLost {
			n.m.drop("dependency_not_found")
			n.log.Warn("node: delivered a signal without a dependency that no peer offered within DepWait",
				"signal", r.V.ID, "origin", r.Meta.Origin, "seq", r.Meta.Seq)
		}
		if !journaled[i] {
			n.fresh.add(r.Meta.Ref(), r.V, time.Now()) // until its journal entry is seen
		}
		if r.Dup {
			n.m.deduped.Add(1)
			n.dispatchCovered(r.V) // named subscriptions move their cursor past it
			continue
		}
		if r.Late {
			n.m.drop("delivered_late")
			n.log.Warn("node: delivered a signal after later ones of its origin, which were given up on it (DepWait)",
				"signal", r.V.ID, "origin", r.Meta.Origin, "seq", r.Meta.Seq)
			n.dispatch(r.V, markLate)
			continue
		}
		n.dispatch(r.V, markNone)
	}
}

// publishBase makes the core's frontier visible to the committer, which
// stamps new signals with it: whatever a handler saw is a cause of what it
// publishes next.
func (n *Node) publishBase() {
	deps, lamport, trunc := n.core.Frontier(n.selfRef, n.p.MaxDeps)
	n.base.Store(&stampBase{deps: deps, lamport: lamport, truncated: trunc})
	n.m.buffered.Store(int64(n.core.Len()))
}

// pullStep reads, for each origin the core lacks signals of, the next
// signals from the journal in sequence, and offers them, up to budget
// reads. It reports whether to go on (the step made progress), and the
// first error reading the store; an entry that does not decode is counted
// and skipped.
func (n *Node) pullStep(ctx context.Context, budget int) (bool, error) {
	refs := n.core.Pull()
	progress := false
	var idx ds.Batch // index entries of what it reads, after a crash (the put hook's last entries may be lost)
	if n.indexing && len(refs) > 0 {
		var err error
		if idx, err = n.index.Batch(ctx); err != nil {
			return false, err
		}
	}
	defer func() {
		if idx != nil {
			if err := idx.Commit(context.WithoutCancel(ctx)); err != nil {
				n.log.Error("node: write the journal index", "err", err)
				n.m.drop("index_write")
				n.indexBad.Store(true)
			}
		}
	}()
	for _, r := range refs {
		for seq := r.Seq; budget > 0; seq++ {
			raw, err := n.repl.Get(ctx, journal.SignalKey(r.Origin, seq))
			if errors.Is(err, ds.ErrNotFound) {
				break
			}
			if err != nil {
				return progress, fmt.Errorf("node: read journal entry %s:%d: %w", r.Origin, seq, err)
			}
			budget--
			n.pulled++
			s, err := signalmesh.DecodeBinary(raw, signalmesh.Limits{})
			if err != nil {
				n.m.reject("journal_entry")
				break
			}
			m, err := journal.MetaOf(s)
			if err != nil || m.Origin != r.Origin || m.Seq != seq {
				n.m.reject("journal_entry")
				break
			}
			n.seen.add(s.ID)
			if idx != nil {
				for _, e := range journal.IndexEntries(m) {
					_ = idx.Put(ctx, e.Key, e.Value) // a batch in memory: its Commit reports
				}
			}
			err = n.offerJournaled(m, s)
			if err != nil && !errors.Is(err, causal.ErrDuplicate) {
				break // full, or a bad stamp: this origin's next cannot go on
			}
			progress = progress || err == nil
		}
	}
	if n.core.Len() < n.p.CausalBuffer/2 {
		n.refusing.Store(false) // room again: the put hook sends whole signals
	}
	return progress, nil
}

// catchUp pulls until the core lacks nothing the journal holds (at start).
func (n *Node) catchUp(ctx context.Context) error {
	for {
		more, err := n.pullStep(ctx, 1<<16)
		if err != nil || !more {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
