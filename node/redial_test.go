package node_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/node"
)

// A peer that restarts on its data directory and address is found again by
// the peers that bootstrapped to it, with nobody calling Connect.
func TestBootstrapPeersAreRedialled(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	port := freePort(t)
	mesh := fmt.Sprintf("redial-%d", time.Now().UnixNano())
	startB := func() *node.Node {
		b, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dir, Logger: testLogger(t),
			ListenAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := startB()
	bInfo := b.AddrInfo()
	a, err := node.New(ctx, node.Config{Mesh: mesh, Logger: testLogger(t),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []peer.AddrInfo{bInfo},
		Params: node.Params{Redial: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	connected := func() bool { return slices.Contains(a.Peers(), bInfo.ID) }
	eventually(t, 10*time.Second, "a connected to b", connected)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a sees b gone", func() bool { return !connected() })
	b = startB()
	defer b.Close()
	if b.ID() != bInfo.ID {
		t.Fatalf("b restarted as %s, want %s", b.ID(), bInfo.ID)
	}
	eventually(t, 10*time.Second, "a redials the restarted b", connected)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
