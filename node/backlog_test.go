package node_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// readCounter is a store that counts the entries read under one prefix
// (the journal's go-ds-crdt namespace): by key, and as query results.
type readCounter struct {
	ds.Batching
	prefix string
	reads  atomic.Int64
}

func (c *readCounter) note(k ds.Key) {
	if strings.HasPrefix(k.String(), c.prefix) {
		c.reads.Add(1)
	}
}

func (c *readCounter) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	c.note(k)
	return c.Batching.Get(ctx, k)
}

func (c *readCounter) Has(ctx context.Context, k ds.Key) (bool, error) {
	c.note(k)
	return c.Batching.Has(ctx, k)
}

func (c *readCounter) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := c.Batching.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return query.NaiveFilter(res, countFilter{c}), nil
}

type countFilter struct{ c *readCounter }

func (f countFilter) Filter(e query.Entry) bool { f.c.note(ds.RawKey(e.Key)); return true }

// A named subscription that resumes after a restart reads the journal
// after its cursor, not the whole journal: its start costs what it missed,
// whatever the history (issue 15: memory and time follow what is read,
// not what was ever published).
func TestResumeReadsOnlyAfterTheCursor(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	const mesh, old, missed = "resume-reads", 3000, 5
	st := &readCounter{Batching: dssync.MutexWrap(ds.NewMapDatastore()), prefix: "/mesh/" + mesh + "/journal"}
	cfg := node.Config{Mesh: mesh, Datastore: st, DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	journaled := func(n *node.Node, want int) func() bool {
		return func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == want }
	}

	first, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if _, err := first.Subscribe("feed.**", rec.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < old; i += 500 {
		var batch []*signalmesh.Signal
		for j := i; j < i+500; j++ {
			batch = append(batch, mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(j))))
		}
		if err := first.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the subscription handled the history", func() bool { return rec.count() == old })
	eventually(t, 30*time.Second, "the history journaled", journaled(first, old))
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	n, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var want []string
	for i := range missed {
		s := mustSignal(t, "feed.new", signalmesh.WithSubject(fmt.Sprint(i)))
		want = append(want, s.ID)
		if err := n.Publish(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the new signals journaled", journaled(n, old+missed))
	again := newRecorder()
	st.reads.Store(0)
	if _, err := n.Subscribe("feed.**", again.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	reads := st.reads.Load()
	eventually(t, 30*time.Second, "the resumed subscription handled what it missed", func() bool { return again.count() >= missed })
	got := again.snapshot()
	if len(got) != missed {
		t.Fatalf("the resumed subscription handled %d signals, want the %d it missed", len(got), missed)
	}
	for i, s := range got {
		if s.ID != want[i] {
			t.Fatalf("resumed signal %d is %s (%s), want %s", i, s.ID, s.Type, want[i])
		}
	}
	// Reading the origins' next entries, the missed signals and their
	// copies in the index: a few per signal and origin. The whole journal
	// is 3,005 entries.
	if reads > 200 {
		t.Fatalf("resuming read %d journal entries for %d missed signals of %d", reads, missed, old+missed)
	}
	t.Logf("resuming read %d journal entries", reads)
}
