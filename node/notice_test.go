package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A handler that fails on a truncation notice is not retried and
// publishes no dead letter for it: a dead letter names the failed signal
// as its cause, and a notice is in no journal, so that dead letter (and
// every later signal of its node) would wait CauseWait for it.
func TestNoticeHandlerErrorHoldsNothing(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "notice-error", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "feed.**", MaxCount: 1}},
		Params:    node.Params{CauseWait: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for i := range 3 {
		if err := n.Publish(ctx, mustSignal(t, "feed.tick", signalmesh.WithSubject(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 3 })
	dl := newRecorder()
	if _, err := n.Subscribe(node.DeadLetterType, dl.handle); err != nil {
		t.Fatal(err)
	}
	later := newRecorder()
	if _, err := n.Subscribe("later.**", later.handle); err != nil {
		t.Fatal(err)
	}
	var notices, calls atomic.Int64
	_, err = n.Subscribe("feed.**", func(ctx context.Context, s *signalmesh.Signal) error {
		calls.Add(1)
		if s.Type == node.TypeTruncated {
			notices.Add(1)
			return errors.New("unexpected type")
		}
		return nil
	}, node.WithStart(node.StartBeginning), node.WithRetry(node.Retry{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the notice and the retained signal handled", func() bool { return calls.Load() == 2 })
	if err := n.Publish(ctx, mustSignal(t, "later.x")); err != nil {
		t.Fatal(err)
	}
	// Well within CauseWait (a minute): a dead letter of the notice would
	// hold it that long.
	eventually(t, 10*time.Second, "a signal published after the notice failed", func() bool { return later.count() == 1 })
	if notices.Load() != 1 || dl.count() != 0 {
		t.Fatalf("the notice was handed %d times and made %d dead letters, want once and none", notices.Load(), dl.count())
	}
}

// gateStore holds back the commit of the batch that writes target's value
// (go-ds-crdt calls the put hook before it commits) and lets it land the
// moment a read of that value has found it absent.
type gateStore struct {
	ds.Batching
	target   atomic.Value // string: "/k<signal key>/v" (written by the test, read by the node's goroutines)
	armed    atomic.Bool
	held     chan struct{} // closed when the commit waits
	open     chan struct{} // closed to let it go
	done     chan struct{} // closed once committed
	heldOnce sync.Once
	openOnce sync.Once
}

func (g *gateStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if g.is(k) && g.armed.CompareAndSwap(true, false) {
		v, err := g.Batching.Get(ctx, k)
		g.openOnce.Do(func() { close(g.open) })
		<-g.done
		return v, err
	}
	return g.Batching.Get(ctx, k)
}

// is reports whether k is the target's key.
func (g *gateStore) is(k ds.Key) bool {
	t, _ := g.target.Load().(string)
	return t != "" && strings.HasSuffix(k.String(), t)
}

func (g *gateStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := g.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &gateBatch{Batch: b, g: g}, nil
}

type gateBatch struct {
	ds.Batch
	g   *gateStore
	hit bool
}

func (b *gateBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	if b.g.is(k) {
		b.hit = true
	}
	return b.Batch.Put(ctx, k, v)
}

func (b *gateBatch) Commit(ctx context.Context) error {
	if !b.hit {
		return b.Batch.Commit(ctx)
	}
	b.g.heldOnce.Do(func() { close(b.g.held) })
	<-b.g.open
	err := b.Batch.Commit(ctx)
	close(b.g.done)
	return err
}

// A signal whose journal entry was announced (put hook) but not committed
// when a backlog read its place, and committed right after, is in the
// backlog: delivered already, it never comes live. (An earlier backlog
// checked the journal for it after streaming, found it, took it for one
// the stream had passed over, and lost it.)
func TestBacklogHasASignalCommittedWhileItReads(t *testing.T) {
	checkLeaks(t)
	g := &gateStore{held: make(chan struct{}), open: make(chan struct{}), done: make(chan struct{})}
	node.SetTestWrapStore(func(b ds.Batching) ds.Batching { g.Batching = b; return g })
	t.Cleanup(func() { node.SetTestWrapStore(nil) })
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "backlog-gate", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	defer g.openOnce.Do(func() { close(g.open) }) // whatever happens, the commit lands before Close
	first := mustSignal(t, "feed.tick")
	if err := n.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the first journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 1 })
	g.target.Store("/k" + journal.SignalKey(causal.PeerRef(n.ID().String()), 2).String() + "/v")
	second := mustSignal(t, "feed.tick")
	if err := n.Publish(ctx, second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the second signal's commit never came")
	}
	eventually(t, 10*time.Second, "the put hook saw the second", func() bool { return n.Arrived() == 2 })
	g.armed.Store(true)
	rec := newRecorder()
	if _, err := n.Subscribe("feed.**", rec.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both handled", func() bool { return rec.count() >= 2 })
	if g.armed.Load() {
		t.Log("the backlog did not read the second's place by key (it was not in the stream's range): the commit was let go after")
	}
	got := rec.snapshot()
	if len(got) != 2 || got[0].ID != first.ID || got[1].ID != second.ID {
		t.Fatalf("a subscription from the beginning got %d signals, want %s then %s", len(got), first.ID, second.ID)
	}
}
