package crdt

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/datastore/dshelp"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

// Pruning. go-ds-crdt keeps every block and every value for good; Prune
// deletes, in this replica's store alone (no delta, no tombstone, nothing
// another replica sees), the values its caller says may go, and the
// blocks all of whose entries may. Each pruned block keeps go-ds-crdt's mark
// that it was merged (/b/<multihash>, a few dozen bytes), so that a walk
// from a newer head stops there and never asks for it again. Heads, blocks
// not merged yet, and blocks with a tombstone are kept.
//
// What it costs other replicas: a peer whose walk needs a pruned block
// (one that was away while the block was new) fetches it from a replica
// that still has it, or waits for it in vain: go-ds-crdt marks its store
// dirty and retries in its repair walk, and it merges everything above
// the block meanwhile. The caller prunes only what is past retention,
// which such a peer would not keep either; a fresh peer joins from a
// snapshot (Seed) and asks no old block at all.

// PruneStats is what one Prune did.
type PruneStats struct {
	Blocks, Kept int // blocks deleted; blocks of this replica looked at and kept
	Keys         int // values deleted
}

// Prune goes through the blocks blocks gives (every block of the
// blockstore, say; a block of another replica sharing it is not merged
// here and is left alone; the caller ends its producer), and finds, for
// each merged block, the values of the entries drop accepts (a value gone
// already is not counted again), and the block itself when drop accepted
// every entry, every block it links is merged, and it is not a head. So a
// block mixing signals of a short and a long retention loses the short
// ones' values at once and leaves the disk with the last. A value goes
// with its priority and the element this block added (a copy of the same
// key in another block, an adoption, leaves its element: a key, no
// value). Then, when it
// found anything, it calls before (an error there stops it: nothing is
// deleted), tells dropped each key it deletes, and deletes them and the
// blocks.
func (r *Replica) Prune(ctx context.Context, blocks <-chan cid.Cid, drop func(key string, value []byte) bool,
	before func() error, dropped func(key string, value []byte)) (PruneStats, error) {
	var st PruneStats
	heads := map[string]bool{}
	for _, h := range r.InternalStats(ctx).Heads {
		heads[string(h.Hash())] = true
	}
	type entry struct {
		key   string
		value []byte
		block string // the element id go-ds-crdt gave it: the block's key
	}
	var keys []entry
	var gone []cid.Cid
	for c := range blocks {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		head := heads[string(c.Hash())]
		// A blockstore lists its blocks by multihash (raw CIDs): read
		// them as the DAG nodes go-ds-crdt writes.
		c = cid.NewCidV1(cid.DagProtobuf, c.Hash())
		if !r.merged(ctx, c) {
			continue // not merged here: a block of another replica, or one on its way
		}
		nd, err := r.dag.Get(ctx, c)
		if err != nil {
			continue // gone meanwhile
		}
		pn, ok := nd.(*dag.ProtoNode)
		if !ok {
			continue
		}
		var d pb.Delta
		if err := proto.Unmarshal(pn.Data(), &d); err != nil {
			continue
		}
		if len(d.Tombstones) > 0 || len(d.Elements) == 0 {
			st.Kept++
			continue
		}
		whole := !head // a head stays: the next local write links it
		for _, e := range d.Elements {
			if !cleanKey(e.Key) || !drop(e.Key, e.Value) {
				whole = false
				continue
			}
			vk := r.ns.ChildString("s").ChildString("k").ChildString(e.Key).ChildString("v")
			if has, err := r.store.Has(ctx, vk); err != nil {
				return st, err
			} else if has {
				keys = append(keys, entry{e.Key, e.Value, dshelp.MultihashToDsKey(c.Hash()).String()})
			} // else forgotten in an earlier round
		}
		for _, l := range nd.Links() {
			whole = whole && r.merged(ctx, l.Cid) // a walk under way below it: kept until it is done (see MergedBlocks)
		}
		if !whole {
			st.Kept++
			continue
		}
		gone = append(gone, c)
	}
	if len(keys)+len(gone) == 0 {
		return st, nil
	}
	if before != nil {
		if err := before(); err != nil {
			return st, err
		}
	}
	b, err := r.store.Batch(ctx)
	if err != nil {
		return st, err
	}
	n := 0
	for _, e := range keys {
		if dropped != nil {
			dropped(e.key, e.value)
		}
		k := r.ns.ChildString("s").ChildString("k").ChildString(e.key)
		for _, x := range []ds.Key{k.ChildString("v"), k.ChildString("p"), r.ns.ChildString("s").ChildString("s").ChildString(e.key).ChildString(e.block)} {
			if err := b.Delete(ctx, x); err != nil {
				return st, err
			}
		}
		st.Keys++
		if n++; n == 1024 {
			if err := b.Commit(ctx); err != nil {
				return st, err
			}
			if b, err = r.store.Batch(ctx); err != nil {
				return st, err
			}
			n = 0
		}
	}
	if err := b.Commit(ctx); err != nil {
		return st, err
	}
	for _, c := range gone {
		if err := r.dag.Remove(ctx, c); err != nil {
			return st, fmt.Errorf("crdt: prune block %s: %w", c, err)
		}
		st.Blocks++
	}
	return st, nil
}
