package crdt_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// writeBatches writes n batches of per keys each to r: n blocks.
func writeBatches(t *testing.T, r *crdt.Replica, tag string, n, per int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		b, err := r.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < per; j++ {
			if err := b.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%04d/%04d", tag, i, j)), []byte(fmt.Sprintf("v%d.%d", i, j))); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// seedFrom copies a's snapshot into b (held): every value a holds but
// those keep refuses, and its merged blocks when commit is set.
func seedFrom(t *testing.T, a, b *crdt.Replica, keep func(string) bool, commit bool) int {
	t.Helper()
	ctx := context.Background()
	s, err := b.Seed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	if err := a.MergedBlocks(ctx, func(k string) error { blocks = append(blocks, k); return nil }); err != nil {
		t.Fatal(err)
	}
	values := 0
	if err := a.Values(ctx, func(k string, v []byte, prio uint64) error {
		if keep != nil && !keep(k) {
			return nil
		}
		values++
		return s.Value(ctx, k, v, prio)
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range blocks {
		if err := s.Block(k); err != nil {
			t.Fatal(err)
		}
	}
	if commit {
		if err := s.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return len(blocks)
}

func blocksHeld(t *testing.T, r *replica) int {
	t.Helper()
	ch, err := r.dag.BlockStore().AllKeysChan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range ch {
		n++
	}
	return n
}

func waitValue(t *testing.T, r *crdt.Replica, key string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ok, err := r.Has(context.Background(), ds.NewKey(key)); err != nil {
			t.Fatal(err)
		} else if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never arrived", key)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A replica seeded from another's snapshot reads the snapshot's values
// through go-ds-crdt at once, and walks only what the snapshot did not
// cover: what was written after. Without the seed, the same join fetches
// every block.
func TestSeedIsReadByGoDsCrdt(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	for _, seeded := range []bool{true, false} {
		t.Run(fmt.Sprint("seeded=", seeded), func(t *testing.T) {
			a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
			defer a.close()
			b := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.Hold = true })
			defer b.close()
			writeBatches(t, a.r, "old", 20, 50)
			if seeded {
				if n := seedFrom(t, a.r, b.r, nil, true); n != 20 {
					t.Fatalf("a listed %d merged blocks, want its 20", n)
				}
				v, err := b.r.Get(ctx, ds.NewKey("/old/0003/0007"))
				if err != nil || string(v) != "v3.7" {
					t.Fatalf("seeded value: %q, %v", v, err)
				}
				res, err := b.r.Query(ctx, query.Query{Prefix: "/old", KeysOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				all, err := res.Rest()
				if err != nil || len(all) != 1000 {
					t.Fatalf("query of the seeded replica: %d keys, %v", len(all), err)
				}
			}
			b.r.Release()
			if err := b.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
				t.Fatal(err)
			}
			writeBatches(t, a.r, "new", 1, 5)
			waitValue(t, b.r, "/new/0000/0004")
			waitValue(t, b.r, "/old/0000/0000")
			// The new block becomes the joiner's head.
			want := fmt.Sprint(a.r.InternalStats(ctx).Heads)
			for deadline := time.Now().Add(20 * time.Second); fmt.Sprint(b.r.InternalStats(ctx).Heads) != want; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("joiner's heads %v, want the provider's %s", b.r.InternalStats(ctx).Heads, want)
				}
			}
			held := blocksHeld(t, b)
			t.Logf("blocks fetched by the joiner: %d", held)
			if seeded && held > 2 {
				t.Fatalf("seeded joiner fetched %d blocks, want the new one (and at most the provider's old head, announced)", held)
			}
			if !seeded && held < 21 {
				t.Fatalf("unseeded joiner fetched %d blocks, want all 21", held)
			}
		})
	}
}

// A snapshot cut short (no Commit) marks no block merged: the joiner then
// walks the whole DAG, and loses nothing.
func TestSeedCutShortMarksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	defer a.close()
	b := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.Hold = true })
	defer b.close()
	writeBatches(t, a.r, "old", 10, 20)
	// The seed carries only the values of the first five blocks.
	seedFrom(t, a.r, b.r, func(k string) bool { return k < "/old/0005" }, false)
	b.r.Release()
	if err := b.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		waitValue(t, b.r, fmt.Sprintf("/old/%04d/0019", i))
	}
	if held := blocksHeld(t, b); held < 10 {
		t.Fatalf("joiner holds %d blocks, want all 10 walked", held)
	}
}

func TestSeedRefusesBadInput(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	defer a.close()
	if _, err := a.r.Seed(ctx); !errors.Is(err, crdt.ErrNotHeld) {
		t.Fatalf("seed of a replica not held: %v, want ErrNotHeld", err)
	}
	b := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.Hold = true })
	defer b.close()
	s, err := b.r.Seed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"", "/", "a", "/a/../b", "/a//b", "/a/"} {
		if err := s.Value(ctx, k, []byte("x"), 1); err == nil {
			t.Errorf("Value(%q) took an unclean key", k)
		}
	}
	for _, k := range []string{"", "/", "/x", "/../h/abc", "/CIQ"} {
		if err := s.Block(k); err == nil {
			t.Errorf("Block(%q) took a key that is no multihash", k)
		}
	}
	b.r.Release()
	if _, err := b.r.Seed(ctx); !errors.Is(err, crdt.ErrNotHeld) {
		t.Fatalf("seed after Release: %v, want ErrNotHeld", err)
	}
}

// Prune deletes the values that may go and the merged blocks whose every
// entry may, in this replica alone; a block with one entry to keep stays
// (its other values go), and the head stays whole. A later write still
// links and merges.
func TestPruneDeletesOnlyWhatMayGo(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	defer a.close()
	writeBatches(t, a.r, "old", 10, 20)
	// One block mixing an old key and a kept one.
	b, err := a.r.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/old/mixed", "/keep/mixed"} {
		if err := b.Put(ctx, ds.NewKey(k), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	writeBatches(t, a.r, "old2", 1, 5) // the head: its old keys' values go, the block stays
	before := blocksHeld(t, a)
	ch, err := a.dag.BlockStore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	st, err := a.r.Prune(ctx, ch, func(k string, _ []byte) bool { return k[:4] == "/old" }, func(ps []crdt.Pruned) error {
		for _, p := range ps {
			told = append(told, p.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 10 || st.Keys != 206 || len(told) != 206 || blocksHeld(t, a) != before-10 {
		t.Fatalf("pruned %+v, told %d, blocks %d of %d: want the 10 old blocks, their 200 keys, the mixed block's old key and the head's 5", st, len(told), blocksHeld(t, a), before)
	}
	for k, want := range map[string]bool{"/old/0003/0007": false, "/old/mixed": false, "/keep/mixed": true, "/old2/0000/0001": false} {
		if has, err := a.r.Has(ctx, ds.NewKey(k)); err != nil || has != want {
			t.Fatalf("Has(%s) = %v, %v; want %v", k, has, err, want)
		}
	}
	res, err := a.r.Query(ctx, query.Query{Prefix: "/old", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if left, err := res.Rest(); err != nil || len(left) != 0 {
		t.Fatalf("keys under /old left after the prune: %d (%v), want none", len(left), err)
	}
	// A second round finds nothing more to do.
	ch, err = a.dag.BlockStore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := a.r.Prune(ctx, ch, func(k string, _ []byte) bool { return k[:4] == "/old" }, nil); err != nil || st.Keys != 0 || st.Blocks != 0 {
		t.Fatalf("second round: %+v, %v", st, err)
	}
	writeBatches(t, a.r, "new", 1, 3)
	waitValue(t, a.r, "/new/0000/0002")
}
