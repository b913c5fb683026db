package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// Health: ok while the store takes writes and the loop answers; stuck once
// a signal has waited for its cause past CauseTimeout; closed after Close.
func TestHealth(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, func(_ int, c *node.Config) { c.Params.CauseTimeout = 200 * time.Millisecond })
	ctx := context.Background()
	if h := nodes[0].Health(ctx); !h.OK() || h.Peers != 1 || h.String() != "ok" {
		t.Fatalf("health of a fresh node: %+v", h)
	}
	cause := mustSignal(t, "order.created") // never published
	if err := nodes[0].Publish(ctx, mustSignal(t, "order.paid", signalmesh.WithCause(cause))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the waiting effect reported", func() bool {
		h := nodes[0].Health(ctx)
		return h.Stuck > 200*time.Millisecond && h.Store == nil && h.Loop == nil && !h.OK()
	})
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	if h := nodes[1].Health(ctx); h.OK() {
		t.Fatalf("a closed node is healthy: %+v", h)
	}
}
