package crdt_test

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/node/nodetest"
)

// Three replicas each wrote 5 blocks that they then pruned, and one kept
// block (their head) above them. A fresh replica joins all three: a
// join's walk ends at a block nobody holds. go-ds-crdt walks one head at
// a time, and waited its 20 s DAG timeout there (the fault harness's seed
// 1910: a node back from a pause stayed minutes short of the mesh, one
// walk per 20 s), so a head written right after the joins came 20 s late;
// it comes within a walk fetch (walkFetch, 1 s) now.
func TestWalkDoesNotWaitForPrunedBlocks(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	var writers []*replica
	for range 3 {
		w := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
		writeBatches(t, w.r, "old", 5, 4)
		writeBatches(t, w.r, "keep", 1, 1)
		ch, err := w.dag.BlockStore().AllKeysChan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.r.Prune(ctx, ch, func(k string, _ []byte) bool { return k[:4] == "/old" }, nil)
		if err != nil || st.Blocks != 5 {
			t.Fatalf("pruned %+v, %v: want the 5 old blocks", st, err)
		}
		writers = append(writers, w)
	}
	c := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	for _, w := range writers {
		connect(t, c, w)
	}
	waitValue(t, c.r, "/keep/0000/0000") // one of the joins' walks
	if err := writers[0].r.Put(ctx, ds.NewKey("/late"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	// 20 s with go-ds-crdt's own timeout (the walk before it waits).
	waitHas(t, c, "/late", 12*time.Second)
	for _, w := range append(writers, c) {
		w.close()
	}
}
