package node

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/journal"
)

// Origins that left (issue 15). Every origin a node delivers from (each
// peer, each ephemeral publisher with a fresh identity) costs entries in
// the causal core, the reopen state and checkpoints, and the node's maps of
// origins (origins, tops, settled).
//
// The floor record. When a prune round deletes the journal entry of the
// last signal the core delivered of an origin (past its rule's MaxAge: a
// type without an age limit never is), it first writes that origin's
// floor (the highest sequence delivered, its Lamport time) as one record
// in the store: everything of the origin up to it is past retention, for
// good. The record is on disk before the entry goes, so a crash, a round
// ending in error or a restart loses nothing of it: every round looks
// again.
//
// Forgetting. At the end of each round that walked the whole journal,
// every origin the core holds (but this node) whose floor record names
// exactly what the core delivered of it is a candidate: nothing new of it
// was delivered since its last signal went past retention, or since it
// was recalled at its floor. One that the journal still holds any entry
// of (asked of the journal itself: a block with a tombstone is never
// walked by the round) or whose journal top is above its floor stays. If
// the core agrees (causal.Core.Forgettable: nothing of it waits, is named
// by a waiting signal, given up or known above what was delivered), the
// node writes the floors again, synced, and only then has the core
// forget them and drops them from its own maps: a checkpoint or reopen
// state written from then on leaves them out, and the floor is on disk
// before it does.
//
// Recalling. When the core meets such an origin again (it returns, a late
// copy of its signal arrives, a signal names it) it reads the floor back
// (causal.Params.Recall) and goes on as if it had never forgotten it; see
// package causal, Origins that left, for why that keeps causal delivery.
// A recalled origin with nothing new delivered is forgotten again at the
// next round. The node keeps a Bloom filter of the origins with a floor
// record (floorSet, filled from the store at start, about 1 % false
// positives up to floorCap records, or twice those on the store at
// start), so that an origin that never left, and one a hostile signal
// invents, costs no store read.
//
// Limits. A floor record that cannot be read (a store error) is taken for
// no floor, counted (drops, floor_read) and logged: the core takes the
// origin for a new one, so its next signal waits for the sequences below
// it (pruned everywhere) for DepWait and is then delivered as a give-up.
// Recall has no way to hold the origin instead: it is asked deep inside
// the core (a dependency's readiness, an identity check), where no error
// can go back to the caller, and a store that fails reads fails the
// journal too. The records are never deleted: about 40 bytes on disk per
// origin that ever left, and one key read each at start to fill the
// filter (2 bytes of memory each). They could be bounded by the epochs of
// package journal's design (a record below an epoch's cut is moot once
// every replica is past the cut). Origins whose last entries were pruned
// by a version without floors are never found to have left. Causal order
// is promised for retained signals only: a signal already past retention
// when it arrives is delivered, and its origin is forgotten at the next
// round, so what this node publishes after that does not name it (a
// replica that gets it later may deliver that first).
//
// Left as they are: the replicated subscription set's group marks (a
// vclock per member naming each origin it handled, vclock.Clock), which
// only group members rewrite, and the named subscriptions' cursors, which
// name what a handler has passed; both are bounded in size already
// (maxEntryBytes) but still name origins that left.

func (n *Node) floorKey(ref string) ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/floor/" + ref)
}

func (n *Node) floorPrefix() string { return "/signalmesh/" + n.cfg.Mesh + "/floor/" }

// floorCap is how many floor records the filter of them holds at about
// 1 % false positives (16 bits each); it is sized at start for twice the
// records then on the store, and never below this.
const floorCap = 1 << 16

// readFloorSet fills the filter of origins with a floor record from the
// store (keys only).
func (n *Node) readFloorSet(ctx context.Context) error {
	res, err := n.store.Query(ctx, query.Query{Prefix: n.floorPrefix(), KeysOnly: true})
	if err != nil {
		return err
	}
	defer res.Close()
	var refs []string
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		refs = append(refs, strings.TrimPrefix(e.Key, n.floorPrefix()))
	}
	bits := 64
	for bits < 16*max(floorCap, 2*len(refs)) {
		bits *= 2
	}
	n.floorSet = newBloom(bits)
	for _, r := range refs {
		n.floorSet.add(r)
	}
	return nil
}

// recallFloor is the core's Params.Recall: the floor of a forgotten
// origin, from the store (on the loop, or the pruner's round). An origin
// not in the filter has none, without a read.
func (n *Node) recallFloor(ref string) (causal.Floor, bool) {
	if ref == "" || len(ref) > maxRefLen || strings.ContainsAny(ref, "/") || !n.floorSet.mayHave(ref) {
		return causal.Floor{}, false
	}
	b, err := n.store.Get(context.WithoutCancel(n.ctx), n.floorKey(ref))
	if errors.Is(err, ds.ErrNotFound) {
		return causal.Floor{}, false
	}
	if err != nil {
		n.m.drop("floor_read")
		n.log.Error("node: read the floor of an origin that left", "origin", ref, "err", err)
		return causal.Floor{}, false
	}
	if seq, k := binary.Uvarint(b); k > 0 {
		if lam, j := binary.Uvarint(b[k:]); j > 0 && k+j == len(b) {
			return causal.Floor{Origin: ref, Seq: seq, Lamport: lam}, true
		}
	}
	n.m.reject("floor")
	return causal.Floor{}, false
}

// putFloors writes the floor records of fs, each origin in the filter
// first (a "no" from it must be certain).
func (n *Node) putFloors(ctx context.Context, fs []causal.Floor) error {
	b, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for _, f := range fs {
		n.floorSet.add(f.Origin)
		v := binary.AppendUvarint(binary.AppendUvarint(nil, f.Seq), f.Lamport)
		if err := b.Put(ctx, n.floorKey(f.Origin), v); err != nil {
			return err
		}
	}
	return b.Commit(ctx)
}

// departedFloors writes, before a prune round deletes ps, the floor of
// each origin whose last delivered signal is among them (and still the
// last one now). No sync: a floor lost in a crash only delays forgetting.
func (n *Node) departedFloors(ctx context.Context, d *departures, ps []crdt.Pruned) error {
	last := map[string]uint64{}
	for _, p := range ps {
		ref, seq, ok := journal.ParseSignalKey(ds.RawKey(p.Key))
		if ok && ref != n.selfRef && seq == d.delivered[ref] {
			last[ref] = seq
		}
	}
	if len(last) == 0 {
		return nil
	}
	var fs []causal.Floor
	if err := n.do(ctx, func() {
		for ref, seq := range last {
			if f, ok := n.core.FloorOf(ref); ok && f.Seq == seq {
				fs = append(fs, f)
			}
		}
	}); err != nil {
		return err
	}
	return n.putFloors(ctx, fs)
}

// journalHolds reports whether the journal holds any entry of ref.
func (n *Node) journalHolds(ctx context.Context, ref string) (bool, error) {
	res, err := n.repl.Query(ctx, query.Query{Prefix: journal.OriginPrefix(ref), KeysOnly: true, Limit: 1})
	if err != nil {
		return true, err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return true, e.Error
		}
		return true, nil
	}
	return false, nil
}

// departures is what one prune round learns of the origins that may have
// left (see above). Owned by the pruner goroutine.
type departures struct {
	n         *Node
	delivered map[string]uint64 // the core's, when the round began
	floors    map[string]uint64 // forgotten origins' floors, read this round
	kept      map[string]bool   // origins with an entry the round keeps
}

func (n *Node) departures(delivered map[string]uint64) *departures {
	return &departures{n: n, delivered: delivered, floors: map[string]uint64{}, kept: map[string]bool{}}
}

// upTo is the highest sequence of ref the core delivered: its floor if it
// was forgotten (its entries left in a block kept as a head are pruned
// once that block is no longer one).
func (d *departures) upTo(ref string) uint64 {
	if s, ok := d.delivered[ref]; ok {
		return s
	}
	s, ok := d.floors[ref]
	if !ok {
		f, _ := d.n.recallFloor(ref)
		s = f.Seq
		d.floors[ref] = s
	}
	return s
}

// keep notes that the round keeps an entry of ref.
func (d *departures) keep(ref string) { d.kept[ref] = true }

// candidates are the origins the core held when the round began whose
// floor record names what it delivered of them, of which the round kept
// no entry and the journal holds none.
func (n *Node) candidates(ctx context.Context, d *departures) (map[string]uint64, error) {
	want := map[string]uint64{}
	for ref, seq := range d.delivered {
		if ref == n.selfRef || seq == 0 || d.kept[ref] || n.tops.get(ref) > seq {
			continue
		}
		if f, ok := n.recallFloor(ref); !ok || f.Seq != seq {
			continue
		}
		held, err := n.journalHolds(ctx, ref)
		if err != nil {
			return nil, err
		}
		if !held {
			want[ref] = seq
		}
	}
	return want, nil
}

// forgetDeparted forgets the origins that left (see above), after a round
// that walked the whole journal.
func (n *Node) forgetDeparted(ctx context.Context, d *departures) error {
	want, err := n.candidates(ctx, d)
	if err != nil || len(want) == 0 {
		return err
	}
	var fs []causal.Floor
	if err := n.do(ctx, func() { fs = n.core.Forgettable(want) }); err != nil || len(fs) == 0 {
		return err
	}
	if err := n.putFloors(ctx, fs); err != nil {
		return err
	}
	if err := n.store.Sync(ctx, n.floorKey("")); err != nil {
		return err
	}
	return n.do(ctx, func() {
		for _, f := range n.core.Forget(fs) {
			delete(n.origins, f.Origin)
			n.tops.forget(f.Origin)
			n.settled.forget(f.Origin)
			n.m.forgotten.Add(1)
		}
		n.publishBase()
	})
}
