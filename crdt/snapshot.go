package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// Joining from a snapshot. A replica that starts empty normally walks the
// whole DAG from the heads it is told, fetching every block ever written:
// its catch-up follows everything ever published. A snapshot lets it start
// from another replica's state instead: the values that replica holds (or
// the ones its caller keeps, say those still retained), and the list of
// blocks it has merged. The joiner writes the values where go-ds-crdt keeps
// them and marks the blocks merged, so that go-ds-crdt's walk of any head
// stops at the first block of that list: it fetches only what the snapshot
// did not cover.
//
// This reads and writes go-ds-crdt's own layout (v0.6.8: under the
// namespace, /s/k/<key>/v the value, /s/k/<key>/p the priority plus one as
// a uvarint, /b/<block multihash> a merged block), so the module is pinned
// and TestSeedIsReadByGoDsCrdt checks the layout against go-ds-crdt's reads.
// Left out: the elements (/s/s/<key>/<block>), which go-ds-crdt reads only
// to resolve a tombstone; a joiner's replica must refuse tombstones
// (Params.Immutable), as a node's journal does.
//
// Why a value the snapshot covers is never lost: a block is marked merged
// only at the end of a snapshot that arrived whole (Seed.Commit); the
// provider lists only merged blocks from which it has merged everything
// below (MergedBlocks), and it lists them before it reads its values:
// go-ds-crdt merges a block's delta before it marks the block, so every
// value of a listed block, and of every block below it, is in the values
// read after (or the provider's caller left it out on purpose). The provider's heads are listed too (walking them
// would merge again every entry of a block that may hold thousands), so
// the joiner starts with no heads of its own: go-ds-crdt loads its heads
// when it opens, before a seed. Its first blocks are roots, and the first
// block it merges from another replica becomes its head. Nothing is lost
// by it: a delta's place in the DAG orders only conflicting values of one
// key, and a replica that refuses overwrites (Params.Immutable) has none.

// ErrNotHeld: Seed on a replica opened without Params.Hold, or released.
var ErrNotHeld = errors.New("crdt: seed needs a held replica (Params.Hold) not yet released")

// Release lets go-ds-crdt walk the heads it has been told since the
// replica opened (Params.Hold). Idempotent; a no-op without Hold.
func (r *Replica) Release() {
	if r.bc.hold == nil {
		return
	}
	r.releaseOnce.Do(func() { close(r.bc.hold) })
}

func (r *Replica) held() bool {
	if r.bc.hold == nil {
		return false
	}
	select {
	case <-r.bc.hold:
		return false
	default:
		return true
	}
}

// MergedBlocks calls f with the key (under /b, a multihash in go-ds-crdt's
// encoding) of every block this replica has merged, its heads included,
// from which no block it has not merged can be reached: go-ds-crdt marks a
// block merged before it walks the block's children, so a walk under way
// (a catch-up, a heal, holes an unclean stop left) leaves merged blocks
// above unmerged ones. Those are left out, and so are the blocks above
// them: a joiner walks them and finds what they lead to. A merged block
// this replica no longer holds (pruned, see Prune: only once its children
// were merged) counts as closed. It reads every merged block it holds,
// for its links; it needs Params.Has.
func (r *Replica) MergedBlocks(ctx context.Context, f func(key string) error) error {
	if r.has == nil {
		return errors.New("crdt: MergedBlocks needs Params.Has")
	}
	prefix := r.mergedPrefix()
	res, err := r.store.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return err
	}
	var keys []string
	for e := range res.Next() {
		if e.Error != nil {
			res.Close()
			return e.Error
		}
		keys = append(keys, strings.TrimPrefix(e.Key, prefix))
	}
	res.Close()
	parents := map[string][]string{} // a merged block's multihash -> the merged blocks that link it
	var open []string                // merged blocks linking a block not merged
	for _, k := range keys {
		mh, err := dshelp.DsKeyToMultihash(ds.NewKey(k))
		if err != nil {
			continue
		}
		c := cid.NewCidV1(cid.DagProtobuf, mh)
		if ok, err := r.has(ctx, c); err != nil {
			return err
		} else if !ok {
			continue // pruned: closed
		}
		nd, err := r.dag.Get(ctx, c)
		if err != nil {
			return fmt.Errorf("crdt: read merged block %s: %w", c, err)
		}
		for _, l := range nd.Links() {
			if r.merged(ctx, l.Cid) {
				parents[string(l.Cid.Hash())] = append(parents[string(l.Cid.Hash())], string(mh))
			} else {
				open = append(open, string(mh))
			}
		}
	}
	unsafe := map[string]bool{}
	for len(open) > 0 {
		x := open[len(open)-1]
		open = open[:len(open)-1]
		if unsafe[x] {
			continue
		}
		unsafe[x] = true
		open = append(open, parents[x]...)
	}
	for _, k := range keys {
		mh, err := dshelp.DsKeyToMultihash(ds.NewKey(k))
		if err != nil || unsafe[string(mh)] {
			continue
		}
		if err := f(k); err != nil {
			return err
		}
	}
	return nil
}

// Values calls f with every key that has a value, the value and its
// priority, in key order. f must not keep value.
func (r *Replica) Values(ctx context.Context, f func(key string, value []byte, prio uint64) error) error {
	prefix := r.ns.ChildString("s").ChildString("k").String()
	res, err := r.store.Query(ctx, query.Query{Prefix: prefix, Orders: []query.Order{query.OrderByKey{}}})
	if err != nil {
		return err
	}
	defer res.Close()
	// A key's priority (/p) sorts before its value (/v).
	var pkey string
	var prio uint64
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		rest := strings.TrimPrefix(e.Key, prefix)
		switch {
		case strings.HasSuffix(rest, "/p"):
			p, n := binary.Uvarint(e.Value)
			if n <= 0 || p == 0 {
				pkey = ""
				continue
			}
			pkey, prio = strings.TrimSuffix(rest, "/p"), p-1
		case strings.HasSuffix(rest, "/v"):
			key := strings.TrimSuffix(rest, "/v")
			p := uint64(0)
			if key == pkey {
				p = prio
			}
			if err := f(key, e.Value, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// Seed writes a snapshot into a held replica (Params.Hold, before
// Release): values as they arrive, in batches, and the merged blocks at
// Commit, all at once. Not safe for concurrent use.
type Seed struct {
	r      *Replica
	b      ds.Batch
	n      int
	blocks []ds.Key
}

// maxSeedBlocks bounds the merged blocks one snapshot may list (each one's
// key, about 90 bytes with the namespace, is held until Commit).
const maxSeedBlocks = 1 << 20

// Seed starts a snapshot's writes.
func (r *Replica) Seed(ctx context.Context) (*Seed, error) {
	if !r.held() {
		return nil, ErrNotHeld
	}
	b, err := r.store.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &Seed{r: r, b: b}, nil
}

// Value writes key's value and priority, unless the replica holds a value
// for it already. key must be a clean datastore key ("/a/b").
func (s *Seed) Value(ctx context.Context, key string, value []byte, prio uint64) error {
	if !cleanKey(key) {
		return fmt.Errorf("crdt: seed key %q is not a clean key", key)
	}
	set := s.r.ns.ChildString("s").ChildString("k").ChildString(key)
	vk := set.ChildString("v")
	if ok, err := s.r.store.Has(ctx, vk); err != nil || ok {
		return err
	}
	if err := s.b.Put(ctx, vk, value); err != nil {
		return err
	}
	if err := s.b.Put(ctx, set.ChildString("p"), binary.AppendUvarint(nil, prio+1)); err != nil {
		return err
	}
	if s.n++; s.n >= 1024 {
		return s.flush(ctx)
	}
	return nil
}

func (s *Seed) flush(ctx context.Context) error {
	if s.n == 0 {
		return nil
	}
	if err := s.b.Commit(ctx); err != nil {
		return err
	}
	var err error
	s.b, err = s.r.store.Batch(ctx)
	s.n = 0
	return err
}

// cleanKey: key is a datastore key as ds.NewKey writes it, and not the root.
func cleanKey(key string) bool {
	return key != "" && key != "/" && ds.NewKey(key).String() == key
}

// Block notes a merged block by its key under /b (as MergedBlocks gives
// it), written at Commit.
func (s *Seed) Block(key string) error {
	if !cleanKey(key) {
		return fmt.Errorf("crdt: seed block key %q is not a multihash key", key)
	}
	mh, err := dshelp.DsKeyToMultihash(ds.RawKey(key))
	if err != nil || dshelp.MultihashToDsKey(mh).String() != key {
		return fmt.Errorf("crdt: seed block key %q is not a multihash key", key)
	}
	if len(s.blocks) >= maxSeedBlocks {
		return fmt.Errorf("crdt: a seed lists more than %d blocks", maxSeedBlocks)
	}
	s.blocks = append(s.blocks, s.r.ns.ChildString("b").Child(ds.RawKey(key)))
	return nil
}

// Commit writes the values still batched and then every block noted, and
// syncs the replica's namespace. Only then does go-ds-crdt take those
// blocks as merged: a snapshot cut short leaves values (each one a value
// some replica holds) and no block marked.
func (s *Seed) Commit(ctx context.Context) error {
	if err := s.flush(ctx); err != nil {
		return err
	}
	if err := s.r.store.Sync(ctx, s.r.ns); err != nil {
		return err
	}
	for _, k := range s.blocks {
		if err := s.b.Put(ctx, k, nil); err != nil {
			return err
		}
		if s.n++; s.n >= 4096 {
			if err := s.flush(ctx); err != nil {
				return err
			}
		}
	}
	if err := s.flush(ctx); err != nil {
		return err
	}
	s.blocks = nil
	return s.r.store.Sync(ctx, s.r.ns)
}
