package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

func TestQuorum(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sigs := []*signalmesh.Signal{mustSignal(t, "payment.captured"), mustSignal(t, "payment.settled")}
	start := time.Now()
	if err := nodes[0].PublishWith(ctx, node.Quorum(3), sigs...); err != nil {
		t.Fatalf("Quorum(3) with 3 peers up: %v", err)
	}
	t.Logf("Quorum(3) of 2 signals acknowledged in %v", time.Since(start))
	for _, n := range nodes[1:] { // acknowledged means journaled there
		for _, s := range sigs {
			if _, err := n.Get(ctx, s.ID); err != nil {
				t.Fatalf("acknowledged but not journaled on %s: %v", n.ID(), err)
			}
		}
	}

	// Cut node 0 off from everyone: a quorum of 1 cannot be reached.
	for _, o := range nodes[1:] {
		nodes[0].gater.Block(o.ID())
		_ = nodes[0].Disconnect(o.ID())
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	lone := mustSignal(t, "payment.refunded")
	err := nodes[0].PublishWith(short, node.Quorum(1), lone)
	var qe *node.QuorumError
	if !errors.Is(err, node.ErrQuorum) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &qe) || qe.Want != 1 {
		t.Fatalf("Quorum(1) while cut off: %v", err)
	}
	if _, err := nodes[0].Get(context.Background(), lone.ID); err != nil {
		t.Fatalf("the signal of a failed quorum is not journaled: %v", err)
	}
	// It still converges once the cut heals.
	for _, n := range nodes {
		n.gater.Clear()
	}
	connectAll(t, nodes)
	journalsConverge(t, nodes, 3, 30*time.Second)
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
