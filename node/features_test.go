package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

func TestRetryThenDeadLetter(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 1, nil)
	n := nodes[0]
	var calls atomic.Int64
	_, err := n.Subscribe("job.*", func(context.Context, *signalmesh.Signal) error {
		calls.Add(1)
		return errors.New("disk full")
	}, node.WithRetry(node.Retry{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	dead := newRecorder()
	if _, err := n.Subscribe(node.DeadLetterType, dead.handle); err != nil {
		t.Fatal(err)
	}
	job := mustSignal(t, "job.run")
	if err := n.Publish(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a dead letter", func() bool { return dead.count() == 1 })
	if calls.Load() != 3 {
		t.Fatalf("handler called %d times, want 3", calls.Load())
	}
	dl := dead.snapshot()[0]
	var body map[string]any
	if err := dl.DecodeData(&body); err != nil {
		t.Fatal(err)
	}
	if dl.CauseID() != job.ID || body["signal"] != job.ID || body["error"] != "disk full" || body["attempts"] != 3.0 {
		t.Fatalf("dead letter %+v %v", dl, body)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMiddlewareOnBothSides(t *testing.T) {
	checkLeaks(t)
	var order []string
	nodes := cluster(t, 1, func(_ int, c *node.Config) {
		c.PublishMiddleware = []node.PublishMiddleware{func(next node.PublishFunc) node.PublishFunc {
			return func(ctx context.Context, cons node.Consistency, sigs []*signalmesh.Signal) error {
				for _, s := range sigs {
					if strings.HasPrefix(s.Type, "secret.") {
						return errors.New("refused by policy")
					}
				}
				return next(ctx, cons, sigs)
			}
		}}
		c.DispatchMiddleware = []node.Middleware{func(next node.Handler) node.Handler {
			return func(ctx context.Context, s *signalmesh.Signal) error {
				order = append(order, "node")
				return next(ctx, s)
			}
		}}
	})
	n := nodes[0]
	rec := newRecorder()
	_, err := n.Subscribe("**", rec.handle, node.WithMiddleware(func(next node.Handler) node.Handler {
		return func(ctx context.Context, s *signalmesh.Signal) error {
			order = append(order, "sub")
			return next(ctx, s)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(context.Background(), mustSignal(t, "secret.key")); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("publish middleware did not refuse: %v", err)
	}
	if err := n.Publish(context.Background(), mustSignal(t, "open.data")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "delivery", func() bool { return rec.count() == 1 })
	if !slices.Equal(order, []string{"node", "sub"}) {
		t.Fatalf("middleware order %v", order)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReplayCausesEffectsAndStatus(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewRegistry()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 0 {
			c.Registerer = reg
		}
	})
	ctx := context.Background()
	root := mustSignal(t, "order.created")
	mid := mustSignal(t, "payment.captured", signalmesh.WithCause(root))
	leaf1 := mustSignal(t, "order.shipped", signalmesh.WithCause(mid))
	leaf2 := mustSignal(t, "invoice.sent", signalmesh.WithCause(mid))
	if err := nodes[0].Publish(ctx, root, mid); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Publish(ctx, leaf1, leaf2); err != nil {
		t.Fatal(err)
	}
	journalsConverge(t, nodes, 4, 20*time.Second)
	var orders [2][]string
	for i, n := range nodes {
		for s, err := range n.Replay(ctx, "**") {
			if err != nil {
				t.Fatal(err)
			}
			orders[i] = append(orders[i], s.ID)
		}
	}
	if !slices.Equal(orders[0], orders[1]) || len(orders[0]) != 4 {
		t.Fatalf("replay differs between replicas: %v vs %v", orders[0], orders[1])
	}
	var onlyOrders []string
	for s, err := range nodes[1].Replay(ctx, "order.*") {
		if err != nil {
			t.Fatal(err)
		}
		onlyOrders = append(onlyOrders, s.Type)
	}
	if !slices.Equal(onlyOrders, []string{"order.created", "order.shipped"}) {
		t.Fatalf("Replay(order.*) = %v", onlyOrders)
	}
	chain, err := nodes[1].Causes(ctx, leaf1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || chain[0].ID != root.ID || chain[1].ID != mid.ID || chain[2].ID != leaf1.ID {
		t.Fatalf("Causes = %v", chain)
	}
	effects, err := nodes[0].Effects(ctx, mid.ID)
	if err != nil || len(effects) != 2 {
		t.Fatalf("Effects = %v, %v", effects, err)
	}
	got, err := nodes[1].Get(ctx, root.ID)
	if err != nil || got.ID != root.ID || got.Extensions[signalmesh.ExtPeer] != nodes[0].ID().String() {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	st, err := nodes[0].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 2 || st.Journaled != 4 || st.Clock.Get(nodes[1].ID().String()) != 2 || st.Peers != 1 {
		t.Fatalf("status %+v", st)
	}
	if v := metricValue(t, reg, "signalmesh_published_total"); v != 2 {
		t.Fatalf("signalmesh_published_total = %v", v)
	}
	b, _ := json.Marshal(st)
	t.Logf("status: %s", b)
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestSubscriptionSetConverges(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 3, nil)
	noop := func(context.Context, *signalmesh.Signal) error { return nil }
	a, err := nodes[0].Subscribe("order.**", noop, node.WithName("fulfilment"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Subscribe("user.*", noop, node.WithPriority(5)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eventually(t, 10*time.Second, "both subscriptions everywhere", func() bool {
		for _, n := range nodes {
			if subs, err := n.Subscriptions(ctx); err != nil || len(subs) != 2 {
				return false
			}
		}
		return true
	})
	subs, _ := nodes[2].Subscriptions(ctx)
	var found bool
	for _, s := range subs {
		if s.Peer == nodes[0].ID().String() && s.Name == "fulfilment" && s.Pattern == "order.**" {
			found = true
		}
	}
	if !found {
		t.Fatalf("subscription set %+v", subs)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the closed subscription withdrawn everywhere", func() bool {
		for _, n := range nodes {
			if subs, err := n.Subscriptions(ctx); err != nil || len(subs) != 1 {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Weak signals are gossiped only: delivered where the gossip reaches, never
// journaled, never waiting for causes.
func TestWeakIsGossipOnly(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, nil)
	ctx := context.Background()
	rec := newRecorder()
	if _, err := nodes[1].Subscribe("presence.*", rec.handle); err != nil {
		t.Fatal(err)
	}
	local := newRecorder()
	if _, err := nodes[0].Subscribe("presence.*", local.handle); err != nil {
		t.Fatal(err)
	}
	// The GossipSub mesh forms on a heartbeat; weak pings before that may be
	// lost (that is what Weak means), so ping until one arrives.
	var sent []*signalmesh.Signal
	eventually(t, 10*time.Second, "a weak ping across", func() bool {
		s := mustSignal(t, "presence.ping")
		sent = append(sent, s)
		if err := nodes[0].PublishWith(ctx, node.Weak, s); err != nil {
			t.Fatal(err)
		}
		return rec.count() > 0
	})
	eventually(t, 5*time.Second, "every weak signal delivered locally", func() bool { return local.count() == len(sent) })
	for _, s := range sent {
		if _, err := nodes[0].Get(ctx, s.ID); err == nil {
			t.Fatalf("weak signal %s was journaled", s.ID)
		}
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
