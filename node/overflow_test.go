package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// droppedMetric is signalmesh_dropped_total{reason=reason} in reg.
func droppedMetric(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "signalmesh_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// OverflowDrop, by default or chosen, drops what a full queue
// (WithMaxInFlight) cannot take and counts it on the subscription, in
// Status and in the metric.
func TestOverflowDropLosesAndCounts(t *testing.T) {
	for name, opts := range map[string][]node.SubOption{
		"default": {node.WithMaxInFlight(5)},
		"chosen":  {node.WithMaxInFlight(5), node.WithOverflow(node.OverflowDrop)},
	} {
		t.Run(name, func(t *testing.T) { testOverflowDrop(t, opts) })
	}
}

func testOverflowDrop(t *testing.T, opts []node.SubOption) {
	checkLeaks(t)
	reg := prometheus.NewRegistry()
	n := cluster(t, 1, func(_ int, c *node.Config) { c.Registerer = reg })[0]
	release := make(chan struct{})
	var handled atomic.Int64
	sub, err := n.Subscribe("flood.*", func(ctx context.Context, _ *signalmesh.Signal) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		handled.Add(1)
		return nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	const N = 40
	sigs := make([]*signalmesh.Signal, N)
	for i := range sigs {
		sigs[i] = mustSignal(t, "flood.x")
	}
	if err := n.Publish(context.Background(), sigs...); err != nil {
		t.Fatal(err)
	}
	// At most one in the handler and 5 queued: the rest is dropped.
	eventually(t, 10*time.Second, "drops counted", func() bool { return sub.Dropped() >= N-6 })
	close(release)
	eventually(t, 10*time.Second, "the queue drained", func() bool { return handled.Load()+sub.Dropped() == N })
	if handled.Load() > 6 || sub.Blocked() != 0 {
		t.Fatalf("handled %d, blocked %d: OverflowDrop must neither keep nor wait", handled.Load(), sub.Blocked())
	}
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Dropped["subscriber_overflow"] != sub.Dropped() {
		t.Fatalf("Status.Dropped %v, subscription %d", st.Dropped, sub.Dropped())
	}
	if v := droppedMetric(t, reg, "subscriber_overflow"); v != float64(sub.Dropped()) {
		t.Fatalf(`signalmesh_dropped_total{reason="subscriber_overflow"} = %v, subscription dropped %d`, v, sub.Dropped())
	}
}

// WithOverflow is for unnamed subscriptions: with a name (or a group,
// which names its members) Subscribe says so; an unknown policy is
// refused.
func TestOverflowOptionRefused(t *testing.T) {
	checkLeaks(t)
	n := cluster(t, 1, nil)[0]
	noop := func(context.Context, *signalmesh.Signal) error { return nil }
	for _, tc := range []struct {
		what string
		opts []node.SubOption
		want string
	}{
		{"named, block", []node.SubOption{node.WithName("audit"), node.WithOverflow(node.OverflowBlock)}, "named subscription"},
		{"named, drop", []node.SubOption{node.WithOverflow(node.OverflowDrop), node.WithName("audit")}, "named subscription"},
		{"group", []node.SubOption{node.WithGroup("billing"), node.WithOverflow(node.OverflowBlock)}, "named subscription"},
		{"unknown", []node.SubOption{node.WithOverflow(node.Overflow(7))}, "OverflowDrop or OverflowBlock"},
	} {
		sub, err := n.Subscribe("a.**", noop, tc.opts...)
		if err == nil {
			_ = sub.Close()
			t.Fatalf("%s: Subscribe accepted it", tc.what)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: error %q does not say %q", tc.what, err, tc.want)
		}
	}
	if subs, _ := n.Subscriptions(context.Background()); len(subs) != 0 {
		t.Fatalf("a refused subscription is registered: %+v", subs)
	}
}

// OverflowBlock loses nothing: a burst of 3,000 signals from two peers
// (each comes by gossip and by the journal) to a slow handler
// behind a queue of 64 is handled whole, each signal once, in order per
// origin, with the node's loop waiting for room (with OverflowDrop the
// same subscription lost most of them: 2,807 in one run).
func TestOverflowBlockDeliversEveryBurstSignal(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 3, nil)
	var mu sync.Mutex
	got := map[string][]string{} // origin peer id -> signal ids, as handled
	seen := map[string]int{}
	total := 0
	sub, err := nodes[2].Subscribe("burst.**", func(_ context.Context, s *signalmesh.Signal) error {
		time.Sleep(200 * time.Microsecond) // the slow consumer under test
		origin, _ := s.Extensions[signalmesh.ExtPeer].(string)
		mu.Lock()
		got[origin] = append(got[origin], s.ID)
		seen[s.ID]++
		total++
		mu.Unlock()
		return nil
	}, node.WithMaxInFlight(64), node.WithOverflow(node.OverflowBlock))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const perOrigin = 1500
	want := map[string][]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, pub := range nodes[:2] {
		ids := make([]string, 0, perOrigin)
		batches := make([][]*signalmesh.Signal, 0, perOrigin/100)
		for b := 0; b < perOrigin/100; b++ {
			batch := make([]*signalmesh.Signal, 100)
			for i := range batch {
				batch[i] = mustSignal(t, "burst.x")
				ids = append(ids, batch[i].ID)
			}
			batches = append(batches, batch)
		}
		want[pub.ID().String()] = ids
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, batch := range batches {
				if err := pub.Publish(ctx, batch...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return total }
	eventually(t, 90*time.Second, "all 3,000 signals handled or dropped", func() bool { return count()+int(sub.Dropped()) >= 2*perOrigin })
	mu.Lock()
	defer mu.Unlock()
	if total != 2*perOrigin || sub.Dropped() != 0 {
		t.Fatalf("handled %d, dropped %d, want %d handled", total, sub.Dropped(), 2*perOrigin)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("%s handled %d times", id, k)
		}
	}
	for origin, ids := range want {
		if !slices.Equal(got[origin], ids) {
			t.Fatalf("origin %s: handled %d signals, not in publication order (or not all)", origin, len(got[origin]))
		}
	}
	if sub.Dropped() != 0 {
		t.Fatalf("dropped %d", sub.Dropped())
	}
	if sub.Blocked() == 0 {
		t.Fatal("the loop never waited for room: the burst did not fill the queue, the test shows nothing")
	}
	st, err := nodes[2].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dropped["subscriber_overflow"] != 0 {
		t.Fatalf("Status.Dropped %v", st.Dropped)
	}
	t.Logf("the loop waited for room %d times", sub.Blocked())
}

// A handler of an OverflowBlock subscription that publishes on its own
// node, with its ctx, while its queue is full and the node's inbox and
// committer are backed up behind the waiting loop, does not deadlock the
// node; neither do the dead letters a subscription publishes from its own
// goroutine.
func TestOverflowBlockHandlerPublishes(t *testing.T) {
	t.Run("effects", func(t *testing.T) {
		checkLeaks(t)
		n := cluster(t, 1, nil)[0]
		var mu sync.Mutex
		causes, effects := map[string]bool{}, 0
		var failed error
		sub, err := n.Subscribe("chain.**", func(ctx context.Context, s *signalmesh.Signal) error {
			mu.Lock()
			defer mu.Unlock()
			switch s.Type {
			case "chain.cause":
				causes[s.ID] = true
				e, err := signalmesh.New("chain.effect", "/test", nil, signalmesh.WithCause(s))
				if err == nil {
					mu.Unlock()
					err = n.Publish(ctx, e) // its effects come back to this full queue
					mu.Lock()
				}
				if err != nil && failed == nil {
					failed = err
				}
			case "chain.effect":
				if !causes[s.CauseID()] && failed == nil {
					failed = fmt.Errorf("effect %s before its cause %s", s.ID, s.CauseID())
				}
				effects++
			}
			return nil
		}, node.WithMaxInFlight(8), node.WithOverflow(node.OverflowBlock))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		const N = 3000 // more than the loop's inbox holds: the committer waits for the loop
		published := publishInBatches(t, n, "chain.cause", N)
		eventually(t, 90*time.Second, "every cause and every effect handled", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return (len(causes) == N && effects == N) || failed != nil || sub.Dropped() > 0
		})
		mu.Lock()
		defer mu.Unlock()
		if failed != nil {
			t.Fatal(failed)
		}
		if sub.Dropped() != 0 || sub.Blocked() == 0 {
			t.Fatalf("dropped %d, blocked %d: the queue must have filled, and dropped nothing", sub.Dropped(), sub.Blocked())
		}
		if err := <-published; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("dead letters", func(t *testing.T) {
		checkLeaks(t)
		n := cluster(t, 1, nil)[0]
		var jobs, letters atomic.Int64
		sub, err := n.Subscribe("**", func(_ context.Context, s *signalmesh.Signal) error {
			if s.Type == node.DeadLetterType {
				letters.Add(1)
				return nil
			}
			jobs.Add(1)
			return errors.New("no") // one attempt, then a dead letter, published by the subscription
		}, node.WithMaxInFlight(8), node.WithOverflow(node.OverflowBlock), node.WithRetry(node.Retry{Attempts: 1}))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		const N = 2000
		published := publishInBatches(t, n, "job.run", N)
		eventually(t, 90*time.Second, "every job failed and its dead letter handled", func() bool {
			return (jobs.Load() == N && letters.Load() == N) || sub.Dropped() > 0
		})
		if sub.Dropped() != 0 || sub.Blocked() == 0 {
			t.Fatalf("dropped %d, blocked %d", sub.Dropped(), sub.Blocked())
		}
		if err := <-published; err != nil {
			t.Fatal(err)
		}
	})
}

// publishInBatches publishes count signals of type typ on n, 500 to a
// Publish, from a goroutine of its own (a deadlock fails the test's wait,
// and the node's Close at the test's end releases the goroutine); the
// channel gets the first error, or nil.
func publishInBatches(t *testing.T, n *peerNode, typ string, count int) <-chan error {
	t.Helper()
	var batches [][]*signalmesh.Signal
	for b := 0; b < count; b += 500 {
		batch := make([]*signalmesh.Signal, min(500, count-b))
		for i := range batch {
			batch[i] = mustSignal(t, typ)
		}
		batches = append(batches, batch)
	}
	done := make(chan error, 1)
	go func() {
		for _, batch := range batches {
			if err := n.Publish(context.Background(), batch...); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// blockedSub starts a node with an OverflowBlock subscription whose
// handler waits for gate (or the node's end), fills its queue and waits
// until the node's loop waits for room in it; while it waits, a call with
// a context that ends returns. It returns the node, the subscription, how
// many calls the handler began and a subscription to other signals.
func blockedSub(t *testing.T, gate chan struct{}) (*peerNode, *node.Subscription, *atomic.Int64, *recorder) {
	t.Helper()
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	other := newRecorder()
	if _, err := n.Subscribe("other.*", other.handle); err != nil {
		t.Fatal(err)
	}
	var began atomic.Int64
	sub, err := n.Subscribe("hold.*", func(ctx context.Context, _ *signalmesh.Signal) error {
		began.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	}, node.WithMaxInFlight(4), node.WithOverflow(node.OverflowBlock))
	if err != nil {
		t.Fatal(err)
	}
	sigs := make([]*signalmesh.Signal, 10)
	for i := range sigs {
		sigs[i] = mustSignal(t, "hold.x")
	}
	if err := n.Publish(ctx, sigs...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the loop waits for room", sub.Waiting)
	// Context cancellation releases a caller waiting for the loop.
	sctx, cancel := context.WithCancel(ctx)
	statusErr := make(chan error, 1)
	go func() { _, err := n.Status(sctx); statusErr <- err }()
	cancel()
	select {
	case err := <-statusErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Status while the loop waits: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Status did not return when its context ended")
	}
	if err := n.Publish(ctx, mustSignal(t, "other.x")); err != nil {
		t.Fatal(err)
	}
	if !sub.Waiting() || other.count() != 0 || began.Load() != 1 {
		t.Fatalf("waiting %v, other handled %d, handler began %d: the loop should wait, holding the rest", sub.Waiting(), other.count(), began.Load())
	}
	return n, sub, &began, other
}

// Close of an OverflowBlock subscription the loop waits for releases the
// loop at once (the node goes on while the handler's call in progress
// still runs), and Close of the node while its loop waits returns
// promptly, releasing a Publish stuck behind the loop; no goroutine is
// left either way.
func TestOverflowBlockCloseReleases(t *testing.T) {
	t.Run("subscription", func(t *testing.T) {
		checkLeaks(t)
		gate := make(chan struct{})
		_, sub, began, other := blockedSub(t, gate)
		closed := make(chan error, 1)
		go func() { closed <- sub.Close() }()
		eventually(t, 10*time.Second, "the other subscription's signal, once the loop goes on", func() bool { return other.count() == 1 })
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while the handler's call was in progress", err)
		default:
		}
		close(gate) // the call in progress returns
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return once the handler's call returned")
		}
		if began.Load() != 1 {
			t.Fatalf("the handler began %d calls, want the 1 in progress at Close", began.Load())
		}
	})
	t.Run("node", func(t *testing.T) {
		checkLeaks(t)
		gate := make(chan struct{})
		defer close(gate)
		n, _, _, _ := blockedSub(t, gate)
		// A publisher behind the waiting loop: past the loop's inbox
		// (1,024 signals) the committer waits for the loop, and so does
		// the next Publish.
		ctx := context.Background()
		big := make([]*signalmesh.Signal, 1100)
		for i := range big {
			big[i] = mustSignal(t, "hold.x")
		}
		if err := n.Publish(ctx, big...); err != nil {
			t.Fatal(err)
		}
		next := mustSignal(t, "hold.x")
		pubDone := make(chan error, 1)
		go func() { pubDone <- n.Publish(ctx, next) }()
		start := time.Now()
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		// Close asks the loop for what to adopt (at most 5 s): the loop
		// must not be waiting then.
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("Close took %v", d)
		} else {
			t.Logf("Close took %v", d)
		}
		select {
		case err := <-pubDone:
			if err != nil && !errors.Is(err, node.ErrClosed) {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a Publish behind the waiting loop did not return after Close")
		}
	})
}

// A handler of an OverflowBlock subscription that publishes with QuorumInMemory(1)
// waits for another peer's ack, which needs this node's journaler, whose
// commit runs the put hook, which feeds the loop: the loop must not wait
// for that handler until the publish returns. It waited only until the
// commit: with the loop's inbox full of another peer's signals, the put
// hook stalled the journaler, and each effect was acked only once the
// other peer adopted it from gossip (Params.Adopt, 5 s, later).
func TestOverflowBlockHandlerPublishesWithQuorum(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, nil)
	n, far := nodes[0], nodes[1]
	var causes, effects atomic.Int64
	var failed atomic.Pointer[error]
	sub, err := n.Subscribe("quorum.**", func(ctx context.Context, s *signalmesh.Signal) error {
		if s.Type == "quorum.effect" {
			effects.Add(1)
			return nil
		}
		causes.Add(1)
		e, err := signalmesh.New("quorum.effect", "/test", nil, signalmesh.WithCause(s))
		if err == nil {
			err = n.PublishWith(ctx, node.QuorumInMemory(1), e)
		}
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
		return nil
	}, node.WithMaxInFlight(2), node.WithOverflow(node.OverflowBlock))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// The far peer keeps this node's inbox full while the handler works.
	noise := publishInBatches(t, far, "noise.x", 8000)
	const N = 12
	if err := <-publishInBatches(t, n, "quorum.cause", N); err != nil {
		t.Fatal(err)
	}
	// Each effect waited out the far peer's adoption without the fix:
	// 12 take a minute or more.
	eventually(t, 40*time.Second, "every cause handled and every effect acked and handled", func() bool {
		return (causes.Load() == N && effects.Load() == N) || failed.Load() != nil
	})
	if e := failed.Load(); e != nil {
		t.Fatalf("a Quorum(1) publish from the handler: %v", *e)
	}
	if sub.Dropped() != 0 {
		t.Fatalf("dropped %d", sub.Dropped())
	}
	if err := <-noise; err != nil {
		t.Fatal(err)
	}
}

// The backlog a start asks for (WithStart) is not counted against an
// OverflowBlock subscription's bound: a journal longer than the queue
// holds the node up only while live signals fill the queue, not until
// the whole backlog is handled.
func TestOverflowBlockStartBacklogIsNotTheBound(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	const old = 200
	sigs := make([]*signalmesh.Signal, old)
	for i := range sigs {
		sigs[i] = mustSignal(t, "old.x")
	}
	if err := n.Publish(ctx, sigs...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the old signals journaled", func() bool {
		count := 0
		for _, err := range n.Replay(ctx, "old.*") {
			if err != nil {
				return false
			}
			count++
		}
		return count == old
	})
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	var handled atomic.Int64
	sub, err := n.Subscribe("old.*", func(ctx context.Context, _ *signalmesh.Signal) error {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		handled.Add(1)
		return nil
	}, node.WithMaxInFlight(8), node.WithOverflow(node.OverflowBlock), node.WithStart(node.StartBeginning))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	defer release() // first, should the test fail while the handler waits
	// The backlog (200) is queued and its handler held: the node goes on,
	// since no live signal waits for room.
	other := newRecorder()
	if _, err := n.Subscribe("other.*", other.handle); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, mustSignal(t, "old.x"), mustSignal(t, "other.x")); err != nil { // a live one for sub first
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "another subscription's signal while the backlog waits", func() bool { return other.count() == 1 })
	if sub.Waiting() || sub.Blocked() != 0 {
		t.Fatalf("waiting %v, blocked %d: the backlog alone must not hold the node up", sub.Waiting(), sub.Blocked())
	}
	release()
	eventually(t, 30*time.Second, "the backlog and the live signal handled", func() bool { return handled.Load() == old+1 })
}
