package node_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/vclock"
)

// failIndex fails, once armed, the index queries for one id: the first
// one only, or all of them (a read error that does not go away).
type failIndex struct {
	ds.Batching
	suffix atomic.Value // string: the id's index directory
	always bool
	armed  atomic.Bool
	hits   atomic.Int64
}

func (f *failIndex) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if suffix, _ := f.suffix.Load().(string); f.armed.Load() && suffix != "" &&
		strings.HasSuffix(q.Prefix, suffix) && strings.Contains(q.Prefix, "/index/") {
		if f.always || f.hits.Load() == 0 {
			f.hits.Add(1)
			return nil, errors.New("injected index read error")
		}
	}
	return f.Batching.Query(ctx, q)
}

// A backlog whose read fails after its stream picked a signal, before it
// handed it over, reads again from where its last step left it: every
// signal comes once. (The stream asks the index for the copies of each
// signal it picks; that ask fails once for the fifth.)
func TestBacklogReadErrorIsRetriedFromItsLastStep(t *testing.T) {
	checkLeaks(t)
	defer node.SetBacklogRetry(10 * time.Millisecond)()
	ctx := context.Background()
	st := &failIndex{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	n, err := node.New(ctx, node.Config{Mesh: "backlog-retry", Datastore: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var later []*signalmesh.Signal
	for i := range 8 {
		later = append(later, mustSignal(t, "feed.b", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	if err := n.Publish(ctx, mustSignal(t, "feed.a"), mustSignal(t, "feed.a")); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, later...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 10 })
	st.suffix.Store(base64.RawURLEncoding.EncodeToString([]byte(later[4].ID)))
	st.armed.Store(true)
	rec := newRecorder()
	sub, err := n.Subscribe("feed.**", rec.handle, node.WithStart(node.StartAfter(vclock.Clock{}.Set(n.ID().String(), 2))))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	eventually(t, 10*time.Second, "the backlog handed over", func() bool { return rec.count() >= len(later) })
	if st.hits.Load() != 1 {
		t.Fatalf("the injected error was hit %d times, want once", st.hits.Load())
	}
	got := rec.snapshot()
	if len(got) != len(later) {
		t.Fatalf("handled %d signals, want %d", len(got), len(later))
	}
	for i, s := range got {
		if s.ID != later[i].ID {
			t.Fatalf("signal %d handled is %s, want %s", i, s.ID, later[i].ID)
		}
	}
}

// A backlog whose read keeps failing is given up after a few tries (the
// rest of it is not handed over): the subscription goes on with what
// comes live, and an OverflowBlock subscription does not hold its node
// for good.
func TestBacklogReadErrorThatLastsIsGivenUp(t *testing.T) {
	checkLeaks(t)
	defer node.SetBacklogRetry(10 * time.Millisecond)()
	ctx := context.Background()
	st := &failIndex{Batching: dssync.MutexWrap(ds.NewMapDatastore()), always: true}
	n, err := node.New(ctx, node.Config{Mesh: "backlog-lasting", Datastore: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	first, second := mustSignal(t, "feed.a"), mustSignal(t, "feed.a")
	if err := n.Publish(ctx, first, second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 2 })
	st.suffix.Store(base64.RawURLEncoding.EncodeToString([]byte(second.ID)))
	st.armed.Store(true)
	rec := newRecorder()
	sub, err := n.Subscribe("feed.**", rec.handle, node.WithOverflow(node.OverflowBlock), node.WithMaxInFlight(1),
		node.WithStart(node.StartAfter(vclock.Clock{}.Set(n.ID().String(), 1))))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var live []*signalmesh.Signal
	for range 3 {
		s := mustSignal(t, "feed.live")
		live = append(live, s)
		if err := n.Publish(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the live signals handled", func() bool { return rec.count() == len(live) })
	for i, s := range rec.snapshot() {
		if s.ID != live[i].ID {
			t.Fatalf("handled %d is %s (%s), want the live %s", i, s.ID, s.Type, live[i].ID)
		}
	}
	st2, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.hits.Load(); got < 2 || st2.Dropped["backlog_read"] != got {
		t.Fatalf("%d failed reads, %d counted (backlog_read), want a few tries, each counted", got, st2.Dropped["backlog_read"])
	}
}

// Closing a subscription stops its backlog's stream also in the first
// count of a retention rule (from the start: a query over the journal;
// resumed: a read per place after the cursor).
func TestCloseStopsTheRetentionCount(t *testing.T) {
	for _, resumed := range []bool{false, true} {
		t.Run(fmt.Sprintf("resumed=%v", resumed), func(t *testing.T) { closeRetentionCount(t, resumed) })
	}
}

func closeRetentionCount(t *testing.T, resumed bool) {
	checkLeaks(t)
	ctx := context.Background()
	mesh := fmt.Sprintf("close-retention-count-%v", resumed)
	const old = 2000
	st := &readCounter{Batching: dssync.MutexWrap(ds.NewMapDatastore()), prefix: "/mesh/" + mesh + "/journal"}
	n, err := node.New(ctx, node.Config{Mesh: mesh, Datastore: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "feed.**", MaxCount: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	want := old
	if resumed {
		rec := newRecorder()
		sub, err := n.Subscribe("feed.**", rec.handle, node.WithName("r"))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Publish(ctx, mustSignal(t, "feed.first")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the first handled", func() bool { return rec.count() == 1 })
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		want++
	}
	var batch []*signalmesh.Signal
	for j := range old {
		batch = append(batch, mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(j))))
	}
	if err := n.Publish(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == want })
	st.slow(2 * time.Millisecond)
	defer st.slow(0)
	opts := []node.SubOption{node.WithStart(node.StartBeginning)}
	if resumed {
		opts = []node.SubOption{node.WithName("r")}
	}
	sub, err := n.Subscribe("rare.**", func(context.Context, *signalmesh.Signal) error { return nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the backlog's read begun", func() bool { return st.reads.Load() > 0 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// The whole count (2,000 reads of 2 ms) would have passed through
	// Close; a stopped one leaves it at the few made before.
	if r := st.reads.Load(); r >= old {
		t.Fatalf("Close returned after %d journal reads: the retention count read on", r)
	}
}
