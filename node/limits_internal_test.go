package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
)

// TestBitswapProtectionDoesNotHoldTheHighWater: a peer bitswap protected
// and never unprotected (its session's want sender took in the first block
// after the session had ended and unprotected its peers: boxo v0.36.0,
// session.handleShutdown) is trimmed like any other. Protected, three such
// peers kept a hub of high water 2 at 4 connections for good (the trim
// leaves protected peers alone and trims the others to the low water),
// the way TestConnectionLimits' hub stayed over its high water under the
// race detector.
func TestBitswapProtectionDoesNotHoldTheHighWater(t *testing.T) {
	const low, high = 1, 2
	grace := 100 * time.Millisecond
	opts, rm, err := limitOptions(Params{ConnLow: low, ConnHigh: high, ConnGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := libp2p.New(append(opts, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		_ = rm.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Close(); _ = rm.Close() })
	var peers []host.Host
	for range 4 {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		if err := h.Connect(context.Background(), *host.InfoFromHost(hub)); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, h)
	}
	cm := hub.ConnManager()
	for i, h := range peers[:3] { // what bitswap's sessions 1 to 3 left behind
		cm.Protect(h.ID(), fmt.Sprintf("%s%d", bitswapSessionTag, i+1))
		if cm.IsProtected(h.ID(), "") {
			t.Errorf("peer %d is protected by a bitswap session's tag", i)
		}
		if ti := cm.GetTagInfo(h.ID()); ti == nil || ti.Value < fetchTagValue {
			t.Errorf("peer %d: tag info %+v, want a value of at least %d", i, ti, fetchTagValue)
		}
	}
	// Many sessions' tags on one peer are worth one fetch, not one each
	// (leaked ones would otherwise add up past the mesh peers' value).
	for i := range 5 {
		cm.Protect(peers[0].ID(), fmt.Sprintf("%s%d", bitswapSessionTag, 10+i))
	}
	if ti := cm.GetTagInfo(peers[0].ID()); ti == nil || ti.Value != fetchTagValue {
		t.Errorf("a peer of 6 sessions: tag info %+v, want a value of %d", ti, fetchTagValue)
	}
	// The node's own protections hold.
	cm.Protect(peers[3].ID(), protectBootstrap)
	if !cm.IsProtected(peers[3].ID(), protectBootstrap) {
		t.Fatal("a bootstrap peer is not protected")
	}
	cm.Unprotect(peers[3].ID(), protectBootstrap)

	// Past the grace period a trim takes the hub to its low water (the
	// manager's own checks, every half grace period, trim too).
	time.Sleep(2 * grace)
	deadline := time.Now().Add(10 * time.Second)
	for len(hub.Network().Peers()) > low {
		if time.Now().After(deadline) {
			t.Fatalf("the hub has %d connections 10 s after the grace period (low water %d, high %d)", len(hub.Network().Peers()), low, high)
		}
		cm.TrimOpenConns(context.Background())
		time.Sleep(10 * time.Millisecond)
	}
}
