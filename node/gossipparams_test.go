package node_test

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/signalmesh/signalmesh/node"
)

// At degree 6 the mesh degrees are GossipSub's own defaults (the scaling
// follows them), and only Dlazy differs. Every degree a Params accepts
// gives parameters GossipSub accepts, and the default is 4.
func TestGossipSubParamsFollowGossipSubsDefaults(t *testing.T) {
	def := pubsub.DefaultGossipSubParams()
	def.Dlazy = 1
	if got := node.GossipSubParams(node.Params{GossipDegree: 6}); got != def {
		t.Fatalf("degree 6: %+v, want GossipSub's defaults with Dlazy 1 %+v", got, def)
	}
	if got := node.GossipSubParams(node.Params{}); got.D != 4 || got.Dlo != 3 || got.Dhi != 8 || got.Dout != 1 {
		t.Fatalf("default: D %d Dlo %d Dhi %d Dout %d, want 4 3 8 1", got.D, got.Dlo, got.Dhi, got.Dout)
	}
	for _, d := range []int{-1, 1, 33} {
		if err := (node.Params{GossipDegree: d}).Validate(); err == nil {
			t.Errorf("GossipDegree %d: valid, want an error", d)
		}
	}
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for d := 2; d <= 32; d++ {
		p := node.Params{GossipDegree: d}
		if err := p.Validate(); err != nil {
			t.Fatalf("degree %d: %v", d, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		_, err := pubsub.NewGossipSub(ctx, h, pubsub.WithGossipSubParams(node.GossipSubParams(p)))
		cancel()
		if err != nil {
			t.Fatalf("degree %d: GossipSub refuses %+v: %v", d, node.GossipSubParams(p), err)
		}
	}
}
