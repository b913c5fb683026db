package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// TestDropCooldownWithoutNotification: a peer that dropped this node's
// direct connection is left alone for the cooldown even when the swarm's
// Disconnected notification has not reached watchDrops (it runs on its own
// goroutine; here it never comes). Under load a trimmed peer heard the
// hub's next announcement first and dialled it back at once
// (TestDiscoveryLeavesATrimmingPeerAlone, 504 ms after the trim).
func TestDropCooldownWithoutNotification(t *testing.T) {
	ctx := context.Background()
	mesh := fmt.Sprintf("cooldown-%d", time.Now().UnixNano())
	start := func(low int) *Node {
		n, err := New(ctx, Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Params: Params{Discover: 100 * time.Millisecond, ConnGrace: time.Second, Redial: time.Minute, ConnLow: low, ConnHigh: low + 2}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	hub, a, y := start(1), start(6), start(6) // a is below its low water throughout: it dials whomever it hears
	a.host.Network().StopNotify(a.dropWatch)
	for _, pair := range [][2]*Node{{a, hub}, {y, hub}, {a, y}} {
		if err := pair[0].Connect(ctx, pair[1].AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	// a's discoverer saw the hub announce itself while connected to it
	// directly.
	linked := func() bool {
		a.linked.mu.Lock()
		defer a.linked.mu.Unlock()
		_, ok := a.linked.at[hub.self]
		return ok
	}
	deadline := time.Now().Add(20 * time.Second)
	for !linked() {
		if time.Now().After(deadline) {
			t.Fatal("a's discoverer never saw the hub announce itself while connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := hub.host.Network().ClosePeer(a.self); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	// The hub's announcements reach a through y; a dials it again once the
	// cooldown has passed, not before.
	for a.host.Network().Connectedness(hub.self) == network.Connected { // a sees the close
		if time.Since(dropped) > 10*time.Second {
			t.Fatal("a still connected to the hub")
		}
		time.Sleep(time.Millisecond)
	}
	cooldown := a.p.dropCooldown()
	for a.host.Network().Connectedness(hub.self) != network.Connected {
		if time.Since(dropped) > cooldown+20*time.Second {
			t.Fatalf("a did not dial the hub again within %v of the drop", cooldown+20*time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if back := time.Since(dropped); back < cooldown {
		t.Fatalf("a dialled the hub back %v after the drop, within the cooldown of %v", back.Round(time.Millisecond), cooldown)
	}
}
