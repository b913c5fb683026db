package node_test

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	badger "github.com/ipfs/go-ds-badger4"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// stores are the go-datastore implementations Config.Datastore is tested
// with, besides the default pebble and memory.
var stores = []struct {
	name string
	open func(dir string) (ds.Batching, error)
}{
	{"badger", func(dir string) (ds.Batching, error) {
		opts := badger.DefaultOptions
		opts.Options = opts.Options.WithLoggingLevel(3) // errors only
		return badger.NewDatastore(dir, &opts)
	}},
	{"leveldb", func(dir string) (ds.Batching, error) { return leveldb.NewDatastore(dir, nil) }},
}

// checkStoreLeaks is checkLeaks, but for goleveldb's mpoolDrain, which ends
// up to 1 s after the DB's Close (it waits that long for a pooled buffer).
func checkStoreLeaks(t *testing.T) {
	t.Cleanup(func() {
		eventually(t, 5*time.Second, "goleveldb's mpoolDrain to end", func() bool {
			buf := make([]byte, 1<<20)
			return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "leveldb.(*DB).mpoolDrain")
		})
		goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	})
}

func openStore(t *testing.T, open func(string) (ds.Batching, error), dir string) ds.Batching {
	t.Helper()
	st, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// On the caller's store, a node restarts with its identity, its journal
// and its named subscription's cursor.
func TestDatastoreRestart(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind.name, func(t *testing.T) {
			checkStoreLeaks(t)
			dir := t.TempDir()
			ctx := context.Background()
			st := openStore(t, kind.open, filepath.Join(dir, "store"))
			cfg := node.Config{Mesh: "ds-" + kind.name, Datastore: st, DataDir: filepath.Join(dir, "node"), Logger: testLogger(t)}
			n, err := node.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			id := n.ID()
			first := newRecorder()
			sub, err := n.Subscribe("job.*", first.handle, node.WithName("worker"))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 10; i++ {
				if err := n.Publish(ctx, mustSignal(t, "job.run")); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 10*time.Second, "10 handled", func() bool { return first.count() == 10 })
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			// The node synced the store and left it open.
			if _, err := st.Has(ctx, ds.NewKey("/x")); err != nil {
				t.Fatalf("the store was closed: %v", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			cfg.Datastore = openStore(t, kind.open, filepath.Join(dir, "store"))
			defer cfg.Datastore.Close()
			n, err = node.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if n.ID() != id {
				t.Fatalf("identity %s after restart, was %s", n.ID(), id)
			}
			if c, _, err := n.JournalDigest(ctx); err != nil || c != 10 {
				t.Fatalf("journal after restart: %d, %v", c, err)
			}
			again := newRecorder()
			sub, err = n.Subscribe("job.*", again.handle, node.WithName("worker"))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if err := n.Publish(ctx, mustSignal(t, "job.run")); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "the new signal", func() bool { return again.count() == 1 })
		})
	}
}

// Two peers on the caller's stores, cut apart, each publish; healed, both
// journals hold the union.
func TestDatastorePartitionHeal(t *testing.T) {
	for _, kind := range stores {
		t.Run(kind.name, func(t *testing.T) {
			checkStoreLeaks(t)
			dir := t.TempDir()
			var sts [2]ds.Batching
			for i := range sts {
				sts[i] = openStore(t, kind.open, filepath.Join(dir, string(rune('a'+i))))
			}
			t.Cleanup(func() { // after the nodes' Close
				for _, st := range sts {
					_ = st.Close()
				}
			})
			nodes := cluster(t, 2, func(i int, c *node.Config) { c.Datastore = sts[i] })
			cut(nodes[:1], nodes[1:])
			ctx := context.Background()
			for i, n := range nodes {
				for j := 0; j < 5; j++ {
					s := mustSignal(t, "side.event", signalmesh.WithSubject(string(rune('a'+i))))
					if err := n.Publish(ctx, s); err != nil {
						t.Fatal(err)
					}
				}
			}
			heal(t, nodes)
			journalsConverge(t, nodes, 10, 30*time.Second)
		})
	}
}
