package crdt_test

import (
	"context"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// The same key in two blocks (an adoption: the origin's block and the
// adopter's carry the same signal) is one value, but Prune counts it, and
// tells dropped about it, once per block: Status.Pruned counts a journal
// entry twice, the node's gone filter and index deletes see it twice.
func TestReviewPruneCountsAKeyInTwoBlocksTwice(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	defer a.close()
	for _, k := range []string{"/old/k", "/old/k", "/keep/head"} {
		if err := a.r.Put(ctx, ds.NewKey(k), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := a.dag.BlockStore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	st, err := a.r.Prune(ctx, ch, func(k string, _ []byte) bool { return k == "/old/k" }, func(ps []crdt.Pruned) error {
		for _, p := range ps {
			told = append(told, p.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if has, _ := a.r.Has(ctx, ds.NewKey("/old/k")); has {
		t.Fatal("/old/k still there")
	}
	if st.Keys != 1 || len(told) != 1 {
		t.Fatalf("one value deleted, but Prune reports %d keys (%+v) and told dropped %d times", st.Keys, st, len(told))
	}
}

// Blocks go from the oldest up: a block that keeps one entry holds up
// every block above it (its other values still go), so a peer whose walk
// stops at a deleted block never misses a kept entry below it.
func TestPruneKeepsBlocksAboveAKeptOne(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	defer a.close()
	writeBatches(t, a.r, "keep", 1, 3)
	writeBatches(t, a.r, "old", 5, 10)
	writeBatches(t, a.r, "head", 1, 1)
	ch, err := a.dag.BlockStore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.r.Prune(ctx, ch, func(k string, _ []byte) bool { return k[:4] == "/old" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 0 || st.Keys != 50 {
		t.Fatalf("pruned %+v: want the 50 old values and no block (a kept one lies below them)", st)
	}
	if has, err := a.r.Has(ctx, ds.NewKey("/keep/0000/0002")); err != nil || !has {
		t.Fatalf("the kept entry: %v, %v", has, err)
	}
}
