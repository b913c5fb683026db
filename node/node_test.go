package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

func TestPublishReachesEveryPeer(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 3, nil)
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("order.**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := nodes[0].Publish(ctx, mustSignal(t, "order.created"), mustSignal(t, "user.created")); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		eventually(t, 10*time.Second, "delivery", func() bool { return r.count() >= 1 })
		if got := r.snapshot(); len(got) != 1 || got[0].Type != "order.created" {
			t.Fatalf("node %d got %v", i, got)
		}
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, "journal", func() bool {
			c, _, _ := n.JournalDigest(ctx)
			return c == 2
		})
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 1, nil)
	n := nodes[0]
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { errs <- n.Close() }()
	}
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	ctx := context.Background()
	if err := n.Publish(ctx, mustSignal(t, "after.close")); !errors.Is(err, node.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := n.Subscribe("**", newRecorder().handle, node.WithName("late")); !errors.Is(err, node.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if _, err := n.Status(ctx); !errors.Is(err, node.ErrClosed) {
		t.Fatalf("Status after Close: %v", err)
	}
}

// Publishing is idempotent: the same signal published again (a retry after a
// timeout, say) is journaled and delivered once.
func TestPublishIsIdempotent(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, nil)
	rec := newRecorder()
	if _, err := nodes[1].Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := mustSignal(t, "order.created")
	for i := 0; i < 3; i++ {
		if err := nodes[0].Publish(ctx, s, s); err != nil {
			t.Fatal(err)
		}
	}
	next := mustSignal(t, "order.paid", signalmesh.WithCause(s))
	if err := nodes[0].Publish(ctx, next); err != nil {
		t.Fatal(err)
	}
	journalsConverge(t, nodes, 2, 10*time.Second)
	eventually(t, 10*time.Second, "both delivered", func() bool { return rec.count() == 2 })
	st, _ := nodes[0].Status(ctx)
	if st.Clock.Get(nodes[0].ID().String()) != 2 {
		t.Fatalf("own sequence %d after 2 distinct signals", st.Clock.Get(nodes[0].ID().String()))
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Closing a subscription after its node: no panic on the closed store, and
// an answer that says the node is closed (its cursor was saved by Close).
func TestSubscriptionCloseAfterNodeClose(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "sub-close", DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	named, err := n.Subscribe("**", newRecorder().handle, node.WithName("billing"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := n.Subscribe("**", newRecorder().handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, mustSignal(t, "a.b")); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*node.Subscription{named, plain} {
		if err := s.Close(); err != nil && !errors.Is(err, node.ErrClosed) {
			t.Fatalf("Subscription.Close after Node.Close: %v", err)
		}
	}
}
