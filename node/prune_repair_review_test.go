package node

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// go-ds-crdt v0.6.8's repair walk (repairDAG) fetches every block from the
// heads to the roots, processed or not, and gives up at the first it
// cannot get, leaving the store dirty. On a node that pruned, that is the
// first pruned block below its heads: once any fetch failure marks the
// store dirty (a peer restarting mid-fetch is enough), the repair never
// completes again. It is retried every RepairInterval (10 s), walking the
// whole retained DAG and waiting DAGSyncerTimeout (20 s) for a block no
// one has; unmerged blocks it would have reached after the pruned one are
// never repaired; and every start scans all merged blocks (markOpen: dirty).
// The docs (crdt/prune.go, node/prune.go) count on that repair walk.
// Control: the same node without an age rule repairs within seconds.
func TestReviewRepairWalkNeverCompletesAfterPrune(t *testing.T) {
	testRepairEvery = 500 * time.Millisecond // the repair's round, 10 s by default
	t.Cleanup(func() { testRepairEvery = 0 })
	for _, prune := range []bool{false, true} {
		t.Run(fmt.Sprint("prune=", prune), func(t *testing.T) {
			ctx := context.Background()
			mesh := fmt.Sprintf("repair-review-%d", time.Now().UnixNano())
			cfg := Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
				Params: Params{Prune: 50 * time.Millisecond}}
			if prune {
				cfg.Retention = journal.Retention{{Pattern: "old.**", MaxAge: time.Hour}}
			}
			n, err := New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			old := time.Now().Add(-2 * time.Hour)
			for i, typ := range []string{"old.x", "old.x", "new.x"} {
				s, err := signalmesh.New(typ, "/test", nil, signalmesh.WithTime(old))
				if err != nil {
					t.Fatal(err)
				}
				if err := n.Publish(ctx, s); err != nil {
					t.Fatal(err)
				}
				awaitRead(t, "journaled", func() bool { return n.m.journaled.Load() >= int64(i+1) })
			}
			if prune {
				awaitRead(t, "the old blocks pruned", func() bool { return n.m.prunedBlocks.Load() >= 1 })
			}
			// What go-ds-crdt writes when a fetch fails (MarkDirty).
			dirty := ds.NewKey("/mesh/" + mesh + "/journal/d")
			if err := n.store.Put(ctx, dirty, []byte{1}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				if has, err := n.store.Has(ctx, dirty); err == nil && !has {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("the journal store is still dirty 30 s later (repair every 500 ms): pruned blocks %d", n.m.prunedBlocks.Load())
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
