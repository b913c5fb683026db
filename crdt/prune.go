package crdt

import (
	"context"
	"errors"
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

// Pruned is an entry a Prune deletes: its key and value.
type Pruned struct {
	Key   string
	Value []byte
}

// Prune goes through the blocks blocks gives (every block of the
// blockstore, say; a block of another replica sharing it is not merged
// here and is left alone; the caller ends its producer) and finds:
//
//   - the values of the entries drop accepts, each once (a value gone
//     already, or met in a second block, is not counted again): each goes
//     with its priority and the element this block added (a copy of the
//     same key in another block, an adoption, leaves its element: a key,
//     no value);
//   - the blocks to delete: those whose every entry drop accepts, that are
//     not heads, and every block they link is deleted or deleted with
//     them. So deleting goes from the oldest blocks up, and every block
//     below a deleted one is deleted: a peer whose walk stops at a block
//     nobody holds any more (it was away) misses only entries drop
//     accepted, never one below that is kept. A block that holds one
//     entry still kept holds up every block above it; its other values go.
//
// Then, when it found anything, it calls before with the entries (an
// error there stops it: nothing is deleted), and deletes them and the
// blocks.
func (r *Replica) Prune(ctx context.Context, blocks <-chan cid.Cid, drop func(key string, value []byte) bool,
	before func([]Pruned) error) (PruneStats, error) {
	var st PruneStats
	if r.has == nil {
		return st, errors.New("crdt: Prune needs Params.Has")
	}
	heads := map[string]bool{}
	for _, h := range r.InternalStats(ctx).Heads {
		heads[string(h.Hash())] = true
	}
	type entry struct {
		Pruned
		block string // the element id go-ds-crdt gave it: the block's key
	}
	type node struct {
		c     cid.Cid
		whole bool     // every entry dropped, not a head
		links []string // multihashes
	}
	var keys []entry
	seen := map[string]bool{}
	nodes := map[string]*node{}
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
		n := &node{c: c, whole: !head} // a head stays: the next local write links it
		for _, l := range nd.Links() {
			n.links = append(n.links, string(l.Cid.Hash()))
		}
		nodes[string(c.Hash())] = n
		for _, e := range d.Elements {
			if !cleanKey(e.Key) || !drop(e.Key, e.Value) {
				n.whole = false
				continue
			}
			if seen[e.Key] {
				continue
			}
			seen[e.Key] = true
			vk := r.ns.ChildString("s").ChildString("k").ChildString(e.Key).ChildString("v")
			if has, err := r.store.Has(ctx, vk); err != nil {
				return st, err
			} else if has {
				keys = append(keys, entry{Pruned{e.Key, e.Value}, dshelp.MultihashToDsKey(c.Hash()).String()})
			} // else forgotten in an earlier round
		}
	}
	// A block goes when it is whole and everything it links is gone
	// already (merged here, no longer held) or goes too.
	state := map[string]int8{} // 1: goes, -1: stays; 2: being decided (a cycle: stays)
	var goes func(mh string) bool
	goes = func(mh string) bool {
		switch state[mh] {
		case 1:
			return true
		case -1, 2:
			return false
		}
		state[mh] = 2
		ok := false
		if n := nodes[mh]; n != nil && n.whole {
			ok = true
			for _, l := range n.links {
				if nodes[l] != nil {
					ok = ok && goes(l)
				} else {
					c := cid.NewCidV1(cid.DagProtobuf, []byte(l))
					held, err := r.has(ctx, c)
					ok = ok && err == nil && !held && r.merged(ctx, c) // pruned before
				}
				if !ok {
					break
				}
			}
		}
		if ok {
			state[mh] = 1
		} else {
			state[mh] = -1
		}
		return ok
	}
	var gone []cid.Cid
	for mh, n := range nodes {
		if goes(mh) {
			gone = append(gone, n.c)
		} else {
			st.Kept++
		}
	}
	if len(keys)+len(gone) == 0 {
		return st, nil
	}
	if before != nil {
		ps := make([]Pruned, len(keys))
		for i, e := range keys {
			ps[i] = e.Pruned
		}
		if err := before(ps); err != nil {
			return st, err
		}
	}
	b, err := r.store.Batch(ctx)
	if err != nil {
		return st, err
	}
	n := 0
	for _, e := range keys {
		k := r.ns.ChildString("s").ChildString("k").ChildString(e.Key)
		for _, x := range []ds.Key{k.ChildString("v"), k.ChildString("p"), r.ns.ChildString("s").ChildString("s").ChildString(e.Key).ChildString(e.block)} {
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
