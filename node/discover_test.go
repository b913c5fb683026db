package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/node"
)

// TestDiscoveryBeyondBootstrap: 12 nodes, each bootstrapped to one seed
// only, find each other by the mesh's address announcements and reach
// GossipSub's D_lo (5 mesh peers on the signals topic) or more within
// 20 s; then the seed leaves, and a signal published by each remaining
// node still reaches every other.
func TestDiscoveryBeyondBootstrap(t *testing.T) {
	checkLeaks(t)
	const n, dLo = 12, 5
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
	eventually(t, 20*time.Second, fmt.Sprintf("every node with %d mesh peers or more", dLo), func() bool {
		for _, nd := range append(nodes, seed[0]) {
			st, err := nd.Status(context.Background())
			if err != nil || st.Mesh < dLo {
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
