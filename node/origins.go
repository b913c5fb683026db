package node

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh/causal"
)

// Origins that left (issue 15). Every origin a node delivers from (each
// peer, each ephemeral publisher with a fresh identity) costs entries in
// the causal core, the reopen state and checkpoints, and the node's maps of
// origins (origins, tops, settled). A prune round (prune.go) notes, per
// origin, whether the last signal the core delivered of it is past
// retention (by its rule's MaxAge: a type without an age rule never is)
// and whether the journal keeps any entry of it. An origin whose last
// delivered signal is past retention and of which the journal keeps
// nothing has left: if the core agrees (causal.Core.Forgettable: nothing
// of it waits, is named by a waiting signal, given up or known above what
// was delivered), the node writes its floor (the highest sequence
// delivered, its Lamport time) as one record in its store, synced, and
// only then has the core forget it and drops it from its own maps: a
// checkpoint or reopen state written from then on leaves it out, and the
// floor is on disk before it does. When the core meets such an origin
// again (it returns, a late copy of its signal arrives, a signal names
// it) it reads the floor back (causal.Params.Recall, one store read) and
// goes on as if it had never forgotten it; see package causal, Origins
// that left, for why that keeps causal delivery. A record costs about 40
// bytes on disk per origin that ever left; memory keeps none of it.
//
// Left as they are: the replicated subscription set's group marks (a
// vclock per member naming each origin it handled, vclock.Clock), which
// only group members rewrite, and the named subscriptions' cursors, which
// name what a handler has passed; both are bounded in size already
// (maxEntryBytes) but still name origins that left.

func (n *Node) floorKey(ref string) ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/floor/" + ref)
}

// recallFloor is the core's Params.Recall: the floor of a forgotten
// origin, from the store (on the loop, or the pruner's round).
func (n *Node) recallFloor(ref string) (causal.Floor, bool) {
	if ref == "" || len(ref) > maxRefLen || strings.ContainsAny(ref, "/") {
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

// departures is what one prune round learns of the origins that may have
// left (see above). Owned by the pruner goroutine.
type departures struct {
	n         *Node
	delivered map[string]uint64 // the core's, when the round began
	floors    map[string]uint64 // forgotten origins' floors, read this round
	kept      map[string]bool   // origins with an entry the round keeps
	last      map[string]bool   // origins whose last delivered signal is past retention
}

func (n *Node) departures(delivered map[string]uint64) *departures {
	return &departures{n: n, delivered: delivered, floors: map[string]uint64{}, kept: map[string]bool{}, last: map[string]bool{}}
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

// note records the round's verdict on the journal entry ref:seq.
func (d *departures) note(ref string, seq uint64, pruned bool) {
	switch {
	case !pruned:
		d.kept[ref] = true
	case seq == d.delivered[ref] && ref != d.n.selfRef:
		d.last[ref] = true
	}
}

// forgetDeparted forgets the origins that left, after a round that walked
// the whole journal: those whose last delivered signal this round or an
// earlier one found past retention (n.departing), still at that signal,
// with no entry kept.
func (n *Node) forgetDeparted(ctx context.Context, d *departures) error {
	if n.departing == nil {
		n.departing = map[string]uint64{}
	}
	for ref := range d.last {
		n.departing[ref] = d.delivered[ref]
	}
	want := map[string]uint64{}
	for ref, seq := range n.departing {
		if d.delivered[ref] != seq { // it went on, or is forgotten
			delete(n.departing, ref)
			continue
		}
		if !d.kept[ref] && n.tops.get(ref) <= seq {
			want[ref] = seq
		}
	}
	if len(want) == 0 {
		return nil
	}
	var fs []causal.Floor
	if err := n.do(ctx, func() { fs = n.core.Forgettable(want) }); err != nil || len(fs) == 0 {
		return err
	}
	b, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for _, f := range fs {
		v := binary.AppendUvarint(binary.AppendUvarint(nil, f.Seq), f.Lamport)
		if err := b.Put(ctx, n.floorKey(f.Origin), v); err != nil {
			return err
		}
	}
	if err := b.Commit(ctx); err != nil {
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
