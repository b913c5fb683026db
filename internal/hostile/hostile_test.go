package hostile

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/node"
)

// Against two in-memory nodes, the hostile node sends every kind of attack
// within a few seconds, and the nodes refuse and count them.
func TestAttacksAreSentAndRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two nodes and the attacks for 12 s")
	}
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*node.Node
	for range 2 {
		cfg := node.Config{Mesh: "hostile-test", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet}
		cfg.Params.DepWait = time.Second
		if len(nodes) > 0 {
			cfg.Bootstrap = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		n, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	// Honest traffic, so that the journal attacks have entries to aim at.
	pub, stop := context.WithCancel(ctx)
	published := make(chan struct{})
	defer func() { stop(); <-published }()
	go func() {
		defer close(published)
		for pub.Err() == nil {
			s, _ := newHonest()
			_ = nodes[0].Publish(pub, s)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	rep := Run(ctx, Config{Mesh: "hostile-test", Listen: "/ip4/127.0.0.1/tcp/0", Seed: 3, Duration: 12 * time.Second, Flood: 300,
		Bootstrap: []peer.AddrInfo{nodes[0].AddrInfo(), nodes[1].AddrInfo()}, Victims: []peer.ID{nodes[0].ID(), nodes[1].ID()}, Log: quiet})
	stop()
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	for _, k := range []string{chaos.AttackForgedSig, chaos.AttackUnsigned, chaos.AttackMixed, chaos.AttackFlood, chaos.AttackHeadsOpen,
		chaos.AttackHeadsBadCid, chaos.AttackHeadsAbsent, chaos.AttackJournalSig, chaos.AttackJournalKey} {
		if rep.Sent[k] == 0 {
			t.Errorf("no %s sent: %v", k, rep.Sent)
		}
	}
	want := []string{"signature", "origin", "heads_seal", "heads_cid", "journal_signature", "journal_key"}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := map[string]int64{}
		for _, n := range nodes {
			st, err := n.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for r, v := range st.Rejected {
				got[r] += v
			}
		}
		missing := ""
		for _, r := range want {
			if got[r] == 0 {
				missing = r
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node counted %q: %v (sent %v)", missing, got, rep.Sent)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newHonest() (*signalmesh.Signal, error) {
	return signalmesh.New("honest.thing", "/honest", map[string]int{"x": 1})
}
