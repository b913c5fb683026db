package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// A named subscription's handler handles a signal, and the node is killed
// before the subscription logged it as handled; while it is down, another
// peer publishes signals that sort before it in replay order (lower
// Lamport times). Restarted, the node delivers those first, then the
// subscription is opened: it hands over the signal the last process
// handled first, once, and only then the new ones (fault harness seed
// 8095: the redelivery came after 17 new signals of other origins, which
// breaks "redeliveries come before the first new handling").
func TestNamedSubscriptionRedeliversFirstAfterKill(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	mesh := fmt.Sprintf("test-%d", time.Now().UnixNano())
	start := func(cfg node.Config) *node.Node {
		t.Helper()
		cfg.Mesh, cfg.ListenAddrs, cfg.Logger = mesh, []string{"/ip4/127.0.0.1/tcp/0"}, testLogger(t)
		n, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	x := start(node.Config{}) // never meets b before the kill
	b := start(node.Config{DataDir: dir})

	// b's own signals: 20 handled and logged, then x1, handled when the
	// kill comes (its handler is cut short, so nothing logs it).
	var own []*signalmesh.Signal
	for i := range 20 {
		own = append(own, mustSignal(t, "feed.pre", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	x1 := mustSignal(t, "feed.handled")
	first := newRecorder()
	inX1 := make(chan struct{})
	if _, err := b.Subscribe("feed.**", func(ctx context.Context, s *signalmesh.Signal) error {
		_ = first.handle(ctx, s)
		if s.ID != x1.ID {
			return nil
		}
		close(inX1)
		<-ctx.Done() // the kill comes while the handler is done with it
		return ctx.Err()
	}, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, append(own, x1)...); err != nil {
		t.Fatal(err)
	}
	<-inX1
	if err := b.CloseAsCrash(); err != nil {
		t.Fatal(err)
	}

	// While b is down, x publishes; its Lamport times are below x1's.
	var others []*signalmesh.Signal
	for i := range 17 {
		others = append(others, mustSignal(t, "feed.other", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	if err := x.Publish(ctx, others...); err != nil {
		t.Fatal(err)
	}

	b2 := start(node.Config{DataDir: dir})
	live := newRecorder() // unnamed: sees what b2 delivers from now on
	if _, err := b2.Subscribe("feed.other", live.handle); err != nil {
		t.Fatal(err)
	}
	if err := b2.Connect(ctx, x.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "b2 delivers x's signals", func() bool { return live.count() == len(others) })

	again := newRecorder()
	if _, err := b2.Subscribe("feed.**", again.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the reopened subscription catches up", func() bool { return again.count() >= 1+len(others) })
	marker := mustSignal(t, "feed.marker")
	if err := x.Publish(ctx, marker); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the marker after the backlog", func() bool {
		again.mu.Lock()
		defer again.mu.Unlock()
		return again.seen[marker.ID] == 1
	})

	got := again.snapshot()
	if got[0].ID != x1.ID {
		at := -1
		for i, s := range got {
			if s.ID == x1.ID {
				at = i
			}
		}
		t.Fatalf("after the restart the subscription handed over %s first; the signal the last process handled came at %d", got[0].Type, at)
	}
	again.mu.Lock()
	defer again.mu.Unlock()
	for _, s := range own {
		if again.seen[s.ID] != 0 {
			t.Errorf("%s (logged as handled) handed over again", s.ID)
		}
	}
	for _, s := range append([]*signalmesh.Signal{x1, marker}, others...) {
		if c := again.seen[s.ID]; c != 1 {
			t.Errorf("%s (%s) handed over %d times after the restart, want 1", s.ID, s.Type, c)
		}
	}
	if len(got) != 2+len(others) {
		t.Errorf("handed over %d signals after the restart, want %d", len(got), 2+len(others))
	}
}
