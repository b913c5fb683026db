package node_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/node"
)

// startNodes starts n in-memory nodes of one mesh on loopback TCP, each
// with a subscription to everything, and closes them at the end of the test.
func startNodes(t *testing.T, mesh string, n int, cfg func(i int, c *node.Config)) ([]*peerNode, []*recorder) {
	t.Helper()
	nodes, recs := make([]*peerNode, n), make([]*recorder, n)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			if nd == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := nd.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
		}
		wg.Wait()
	})
	for i := range nodes {
		c := node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
			Params: node.Params{HandOff: -1}}
		if cfg != nil {
			cfg(i, &c)
		}
		nd, err := node.New(context.Background(), c)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		nodes[i] = &peerNode{Node: nd}
		recs[i] = newRecorder()
		if _, err := nd.Subscribe("**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, recs
}

// TestConnectionLimits: 60 peers dial one node whose high water is 20. The
// node trims to its low water (10) and stays within its high water, and
// every peer still gets every signal, through the peers it found by
// discovery (each keeps 6 to 12 connections). 61 nodes in one process
// take most of a minute of both cores here, so CI runs the same with 24
// peers and a high water of 10, and under the race detector (several
// times slower: 25 nodes took 6 minutes on a loaded machine) with 12, a
// high water of 6, and peers that keep 3 to 8 connections (the others
// keep 6 to 12); SIGNALMESH_FULL_LIMITS=1 runs the 60.
func TestConnectionLimits(t *testing.T) {
	checkLeaks(t)
	peers, low, high := 24, 5, 10
	peerLow, peerHigh := 6, 12
	if raceEnabled {
		// Peers that want 6 of 11 others keep dialling the hub back.
		peers, low, high, peerLow, peerHigh = 12, 3, 6, 3, 8
	}
	if os.Getenv("SIGNALMESH_FULL_LIMITS") != "" {
		peers, low, high = 60, 10, 20
	}
	mesh := fmt.Sprintf("limits-%d", time.Now().UnixNano())
	nodes, recs := startNodes(t, mesh, peers+1, func(i int, c *node.Config) {
		c.Params.Discover = time.Second
		c.Params.ConnGrace = 5 * time.Second // time to find other peers by discovery before the hub trims (a peer trimmed before it knew another stays alone: the test dials, it has no bootstrap to redial)
		c.Params.ConnLow, c.Params.ConnHigh = peerLow, peerHigh
		if i == 0 {
			c.Params.ConnLow, c.Params.ConnHigh = low, high
		}
	})
	hub := nodes[0]
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, nd := range nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs[i+1] = nd.Connect(ctx, hub.AddrInfo())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("peer %d dials the hub: %v", i, err)
		}
	}
	peak := len(hub.Peers())
	t.Logf("%d peers dialled the hub in %v; the hub has %d connections", peers, time.Since(start).Round(time.Millisecond), peak)

	// The trim, and the peers meshed among themselves.
	var why string
	func() {
		defer func() {
			if t.Failed() {
				t.Logf("last unmet: %s", why)
			}
		}()
		eventually(t, 60*time.Second, "the hub within its high water, every peer with another peer than the hub", func() bool {
			peak = max(peak, len(hub.Peers()))
			if k := len(hub.Peers()); k > high {
				why = fmt.Sprintf("the hub has %d connections, %d of them to protected peers", k, protectedPeers(hub))
				return false
			}
			for i, nd := range nodes[1:] {
				if k := len(nd.Peers()); k < 2 {
					why = fmt.Sprintf("peer %d has %d connections", i+1, k)
					return false
				}
			}
			return true
		})
	}()
	t.Logf("after %v: the hub has %d connections (high water %d, low %d)", time.Since(start).Round(time.Millisecond), len(hub.Peers()), high, low)

	for i, nd := range nodes {
		if err := nd.Publish(context.Background(), mustSignal(t, fmt.Sprintf("limits.n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	converged := time.Now()
	maxAfter := 0
	defer func() {
		if t.Failed() {
			for i, r := range recs {
				t.Logf("node %d: %d of %d signals, %d connections", i, r.count(), len(nodes), len(nodes[i].Peers()))
			}
		}
	}()
	eventually(t, 3*time.Minute, "every subscriber has every signal", func() bool {
		maxAfter = max(maxAfter, len(hub.Peers()))
		for _, r := range recs {
			if r.count() < len(nodes) {
				return false
			}
		}
		return true
	})
	journalsConverge(t, nodes, len(nodes), 60*time.Second)
	t.Logf("converged in %v; the hub's connections: at most %d while it did, %d now", time.Since(converged).Round(time.Millisecond), maxAfter, len(hub.Peers()))
	for i, r := range recs {
		for id, k := range r.seen {
			if k != 1 {
				t.Errorf("node %d got %s %d times", i, id, k)
			}
		}
	}
	// Peers that dialled the hub again while they converged (discovery,
	// redial) are safe from trims for a grace period; then it trims. (Under
	// the race detector the hub stayed one or two over its high water for
	// 30 s in two CI runs, and this was checked by the plain run only; most
	// likely the peers bitswap had left protected, see connManager, which
	// a run here showed holding the hub at 9 of 6 before the convergence.)
	eventually(t, 30*time.Second, "the hub back within its high water", func() bool { return len(hub.Peers()) <= high })
}

// protectedPeers counts the connected peers n's connection manager
// protects.
func protectedPeers(n *peerNode) int {
	k := 0
	for _, p := range n.Peers() {
		if n.Host().ConnManager().IsProtected(p, "") {
			k++
		}
	}
	return k
}
