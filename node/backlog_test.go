package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// readCounter is a store that counts the entries read under one prefix
// (the journal's go-ds-crdt namespace): by key, and as query results;
// with a delay set, each such read takes that long.
type readCounter struct {
	ds.Batching
	prefix string
	reads  atomic.Int64
	delay  atomic.Int64 // nanoseconds
}

func (c *readCounter) note(k ds.Key) {
	if strings.HasPrefix(k.String(), c.prefix) {
		c.reads.Add(1)
		if d := c.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
	}
}

// slow makes each read under the prefix take d from now on, counting
// them from zero.
func (c *readCounter) slow(d time.Duration) {
	c.delay.Store(int64(d))
	c.reads.Store(0)
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
	for _, ret := range []journal.Retention{nil, {{Pattern: "other.**", MaxCount: 10}}} {
		t.Run(fmt.Sprintf("rules=%d", len(ret)), func(t *testing.T) { resumeReads(t, ret) })
	}
}

// resumeReads is TestResumeReadsOnlyAfterTheCursor with the retention
// rules ret (a count rule counts what the backlog reads: its tail).
func resumeReads(t *testing.T, ret journal.Retention) {
	checkLeaks(t)
	ctx := context.Background()
	const mesh, missed = "resume-reads", 5
	old := 3000
	if raceEnabled {
		old = 1000 // the journal is still 200 times what resuming may read
	}
	st := &readCounter{Batching: dssync.MutexWrap(ds.NewMapDatastore()), prefix: "/mesh/" + mesh + "/journal"}
	cfg := node.Config{Mesh: mesh, Datastore: st, DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t), Retention: ret}
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
	eventually(t, 30*time.Second, "the resumed subscription handled what it missed", func() bool { return again.count() >= missed })
	reads := st.reads.Load() // the backlog is read as the handler takes it
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
	// is 3,005 entries (1,005 under -race).
	if reads > 200 {
		t.Fatalf("resuming read %d journal entries for %d missed signals of %d", reads, missed, old+missed)
	}
	t.Logf("resuming read %d journal entries", reads)
}

// A named subscription that resumes past signals that left retention
// meanwhile is told how many first (a truncation notice), then gets the
// retained ones after its cursor.
func TestResumePastRetentionIsTold(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "resume-retention", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "feed.**", MaxCount: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	publish := func(k int) []*signalmesh.Signal {
		var out []*signalmesh.Signal
		for i := range k {
			out = append(out, mustSignal(t, "feed.tick", signalmesh.WithSubject(fmt.Sprint(i))))
		}
		if err := n.Publish(ctx, out...); err != nil {
			t.Fatal(err)
		}
		return out
	}
	rec := newRecorder()
	sub, err := n.Subscribe("feed.**", rec.handle, node.WithName("ticks"))
	if err != nil {
		t.Fatal(err)
	}
	publish(2)
	eventually(t, 10*time.Second, "the first two handled", func() bool { return rec.count() == 2 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	later := publish(10)
	eventually(t, 20*time.Second, "the journal holds all", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 12 })
	again := newRecorder()
	if _, err := n.Subscribe("feed.**", again.handle, node.WithName("ticks")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the notice and the retained three", func() bool { return again.count() >= 4 })
	got := again.snapshot()
	if left, ok := node.Truncation(got[0]); !ok || left != 7 {
		t.Fatalf("the resumed subscription began with %s %s, want a notice of 7 past retention", got[0].Type, got[0].Data)
	}
	var ids []string
	for _, s := range got[1:] {
		ids = append(ids, s.ID)
	}
	if want := []string{later[7].ID, later[8].ID, later[9].ID}; !slices.Equal(ids, want) {
		t.Fatalf("after the notice it got %v, want the retained %v", ids, want)
	}
}

// A backlog is read from the journal as the handler takes it: a
// subscription from the beginning of a 3,000-signal journal whose handler
// holds the first signal has read a few entries, not the journal; once
// let go, it gets all of them in order, then what came live meanwhile.
func TestBacklogIsReadAsTheHandlerTakesIt(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	const mesh = "backlog-pull"
	old := 3000
	if raceEnabled {
		old = 1000
	}
	st := &readCounter{Batching: dssync.MutexWrap(ds.NewMapDatastore()), prefix: "/mesh/" + mesh + "/journal"}
	n, err := node.New(ctx, node.Config{Mesh: mesh, Datastore: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var want []string
	for i := 0; i < old; i += 500 {
		var batch []*signalmesh.Signal
		for j := i; j < i+500; j++ {
			s := mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(j)))
			batch = append(batch, s)
			want = append(want, s.ID)
		}
		if err := n.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the history journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == old })
	release := make(chan struct{})
	rec := newRecorder()
	first := make(chan struct{})
	var once sync.Once
	st.reads.Store(0)
	sub, err := n.Subscribe("feed.**", func(ctx context.Context, s *signalmesh.Signal) error {
		once.Do(func() { close(first) })
		<-release
		return rec.handle(ctx, s)
	}, node.WithStart(node.StartBeginning))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var letGo sync.Once
	free := func() { letGo.Do(func() { close(release) }) }
	defer free() // before Close, which waits for the handler
	<-first
	reads := st.reads.Load()
	live := mustSignal(t, "feed.live")
	if err := n.Publish(ctx, live); err != nil {
		t.Fatal(err)
	}
	want = append(want, live.ID)
	free()
	eventually(t, 30*time.Second, "the backlog and the live signal handled", func() bool { return rec.count() >= old+1 })
	got := rec.snapshot()
	if len(got) != old+1 {
		t.Fatalf("handled %d signals, want %d", len(got), old+1)
	}
	for i, s := range got {
		if s.ID != want[i] {
			t.Fatalf("signal %d handled is %s (%s), want %s", i, s.ID, s.Type, want[i])
		}
	}
	// The first origin's first signals, and the journal's next few: not
	// the 3,000 entries (1,000 under -race) the backlog holds.
	if reads > 100 {
		t.Fatalf("the backlog read %d journal entries before its handler took the first signal of %d", reads, old)
	}
	t.Logf("%d journal entries read before the first signal was handled", reads)
}

// The node closes (cleanly, or as a kill -9 would) while a named
// subscription is in its backlog, with a live signal queued after it:
// reopened, the subscription gets every signal at least once. (The live
// signal must not move its cursor past a backlog it did not read.)
func TestCloseMidBacklogLosesNothing(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) { closeMidBacklog(t, crash) })
	}
}

func closeMidBacklog(t *testing.T, crash bool) {
	checkLeaks(t)
	ctx := context.Background()
	mesh, old := fmt.Sprintf("close-mid-backlog-%v", crash), 200
	cfg := node.Config{Mesh: mesh, Datastore: dssync.MutexWrap(ds.NewMapDatastore()), DataDir: t.TempDir(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	n, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	var batch []*signalmesh.Signal
	for j := range old {
		s := mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(j)))
		batch = append(batch, s)
		want[s.ID] = true
	}
	if err := n.Publish(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == old })
	var mu sync.Mutex
	got := map[string]bool{}
	handle := func(_ context.Context, s *signalmesh.Signal) error {
		mu.Lock()
		got[s.ID] = true
		mu.Unlock()
		return nil
	}
	first := make(chan struct{})
	var once sync.Once
	if _, err := n.Subscribe("feed.**", func(hctx context.Context, s *signalmesh.Signal) error {
		once.Do(func() { close(first); <-hctx.Done() }) // held until the node closes
		return handle(hctx, s)
	}, node.WithName("audit"), node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	<-first
	// Another subscription tells when the loop has dispatched the live
	// signal: it is queued after the backlog then.
	probe := newRecorder()
	if _, err := n.Subscribe("feed.live", probe.handle); err != nil {
		t.Fatal(err)
	}
	live := mustSignal(t, "feed.live")
	want[live.ID] = true
	if err := n.Publish(ctx, live); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the live signal dispatched", func() bool { return probe.count() == 1 })
	if crash {
		_ = n.CloseAsCrash()
	} else if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	sub, err := n2.Subscribe("feed.**", handle, node.WithName("audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	missing := func() int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for id := range want {
			if !got[id] {
				k++
			}
		}
		return k
	}
	eventually(t, 20*time.Second, "every signal handed over at least once", func() bool { return missing() == 0 })
}

// Closing a subscription stops its backlog's stream at once, also in a
// long stretch of signals that do not match (it reads on its own
// context, not the node's).
func TestCloseStopsTheBacklogsRead(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	const mesh, old = "backlog-close-scan", 2000
	st := &readCounter{Batching: dssync.MutexWrap(ds.NewMapDatastore()), prefix: "/mesh/" + mesh + "/journal"}
	n, err := node.New(ctx, node.Config{Mesh: mesh, Datastore: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var batch []*signalmesh.Signal
	for j := range old {
		batch = append(batch, mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(j))))
	}
	if err := n.Publish(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "journaled", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == old })
	st.slow(2 * time.Millisecond)
	defer st.slow(0)
	sub, err := n.Subscribe("rare.**", func(context.Context, *signalmesh.Signal) error { return nil }, node.WithStart(node.StartBeginning))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the backlog's read begun", func() bool { return st.reads.Load() > 0 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// A read of the whole journal (2,000 reads of 2 ms) would have passed
	// through Close; a stopped stream leaves it at the few made before.
	if r := st.reads.Load(); r >= old {
		t.Fatalf("Close returned after %d journal reads: it waited for the backlog's whole read", r)
	}
}
