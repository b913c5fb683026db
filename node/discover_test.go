package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/node"
)

// TestDiscoveryBeyondBootstrap: 12 nodes, each bootstrapped to one seed
// only, find each other by the mesh's address announcements and reach
// the node's GossipSub D_lo (3 mesh peers on the signals topic at the
// default degree 4) or more within 20 s, and more peers than the seed and
// a mesh's worth; then the seed leaves, and a signal published by each
// remaining node still reaches every other.
func TestDiscoveryBeyondBootstrap(t *testing.T) {
	checkLeaks(t)
	const n = 12
	gp := node.GossipSubParams(node.Params{})
	dLo, dHi := gp.Dlo, gp.Dhi
	mesh := fmt.Sprintf("discover-%d", time.Now().UnixNano())
	seed, seedRec := startNodes(t, mesh, 1, func(_ int, c *node.Config) { c.Params.Discover = time.Second })
	start := time.Now()
	nodes, recs := startNodes(t, mesh, n-1, func(_ int, c *node.Config) {
		c.Params.Discover = time.Second
		c.Bootstrap = []peer.AddrInfo{seed[0].AddrInfo()}
	})
	_ = seedRec
	defer func() {
		if t.Failed() {
			for _, nd := range append(nodes, seed[0]) {
				st, _ := nd.Status(context.Background())
				t.Logf("node %s: %d peers, mesh %d", nd.ID().ShortString(), st.Peers, st.Mesh)
			}
		}
	}()
	eventually(t, 20*time.Second, fmt.Sprintf("every node with %d mesh peers or more, and %d peers or more", dLo, dHi), func() bool {
		for _, nd := range append(nodes, seed[0]) {
			st, err := nd.Status(context.Background())
			if err != nil || st.Mesh < dLo || st.Peers < dHi {
				return false
			}
		}
		return true
	})
	meshed := time.Since(start)
	var degrees []int
	for _, nd := range append(nodes, seed[0]) {
		st, _ := nd.Status(context.Background())
		degrees = append(degrees, st.Mesh)
	}
	t.Logf("%d nodes meshed in %v; mesh degrees %v", n, meshed.Round(time.Millisecond), degrees)

	if err := seed[0].Close(); err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		if err := nd.Publish(context.Background(), mustSignal(t, fmt.Sprintf("discover.n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	after := time.Now()
	eventually(t, 30*time.Second, "every remaining node has every signal", func() bool {
		for _, r := range recs {
			if r.count() < len(nodes) {
				return false
			}
		}
		return true
	})
	journalsConverge(t, nodes, len(nodes), 30*time.Second)
	t.Logf("without the seed, %d signals reached all %d nodes in %v", len(nodes), len(nodes), time.Since(after).Round(time.Millisecond))
}

// TestDiscoveryLeavesATrimmingPeerAlone: six peers dial a hub whose high
// water is 3; the hub trims to 2. Each trimmed peer is below its own low
// water (6: all the others) and hears the hub announce itself every
// 200 ms, as it hears the others; it leaves the hub alone for two grace
// periods after the trim (the hub would otherwise be over its high water again at
// once: a CI run of TestConnectionLimits saw it stay over for a minute).
// The redialer, which returns a node connected to nobody to the peers it
// knew, is slowed to once a minute to leave discovery alone on trial.
func TestDiscoveryLeavesATrimmingPeerAlone(t *testing.T) {
	if raceEnabled {
		// Under the race detector on a loaded CI machine one run saw a
		// trimmed peer dial back 504 ms after the trim (before the swarm's
		// Disconnected notification reached the discoverer, now handled:
		// TestDropCooldownWithoutNotification checks it under both), and
		// another no trim recorded within 30 s. The plain run covers it.
		t.Skip("run without -race (CI's second pass)")
	}
	checkLeaks(t)
	const grace = time.Second
	mesh := fmt.Sprintf("trimmed-%d", time.Now().UnixNano())
	nodes, _ := startNodes(t, mesh, 7, func(i int, c *node.Config) {
		c.Params.Discover = 200 * time.Millisecond
		c.Params.Redial = time.Minute
		c.Params.ConnGrace = grace
		c.Params.ConnLow, c.Params.ConnHigh = 6, 8 // every other: a trimmed peer is always below it
		if i == 0 {
			c.Params.ConnLow, c.Params.ConnHigh = 2, 3
		}
	})
	hub := nodes[0]
	type conn struct {
		up  bool
		in  bool
		at  time.Time
		who peer.ID
	}
	var mu sync.Mutex
	var events []conn
	hub.Host().Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, conn{up: true, in: c.Stat().Direction == network.DirInbound, at: time.Now(), who: c.RemotePeer()})
		},
		DisconnectedF: func(nw network.Network, c network.Conn) {
			if nw.Connectedness(c.RemotePeer()) == network.Connected {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			events = append(events, conn{at: time.Now(), who: c.RemotePeer()})
		},
	})
	for _, nd := range nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := nd.Connect(ctx, hub.AddrInfo())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	var trimmed time.Time
	eventually(t, 30*time.Second, "the hub's first trim", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if !e.up {
				trimmed = e.at
				return true
			}
		}
		return false
	})
	// Watch for two grace periods after the trim. (Whether the trimmed
	// peers find others is TestDiscoveryBeyondBootstrap's and
	// TestConnectionLimits': one trimmed before it heard of any other is
	// alone, and its redialer is slowed down here.)
	eventually(t, 30*time.Second, "two grace periods after the trim", func() bool {
		return time.Since(trimmed) >= 2*grace+200*time.Millisecond
	})
	mu.Lock()
	defer mu.Unlock()
	left := map[peer.ID]time.Time{}
	for _, e := range events {
		switch {
		case !e.up:
			left[e.who] = e.at
		case e.in:
			if at, ok := left[e.who]; ok && e.at.Sub(at) < 2*grace {
				t.Errorf("peer %s dialled the hub back %v after its trim", e.who.ShortString(), e.at.Sub(at).Round(time.Millisecond))
			}
		}
	}
	var conns []int
	for _, nd := range nodes[1:] {
		conns = append(conns, len(nd.Peers()))
	}
	t.Logf("the hub's trims: %d peers; the hub has %d connections, the peers %v", len(left), len(hub.Peers()), conns)
}
