package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// cut splits the cluster: every node blocks the other side and drops its
// connections to it.
func cut(sides ...[]*peerNode) {
	for i, side := range sides {
		for j, other := range sides {
			if i == j {
				continue
			}
			for _, n := range side {
				for _, o := range other {
					n.gater.Block(o.ID())
					_ = n.Disconnect(o.ID())
				}
			}
		}
	}
}

func heal(t *testing.T, nodes []*peerNode) {
	for _, n := range nodes {
		n.gater.Clear()
	}
	connectAll(t, nodes)
}

// publishChain publishes count causes from a, waits until b delivered them,
// then publishes one effect per cause from b.
func publishChain(t *testing.T, a, b *peerNode, bRec *recorder, prefix string, count int) {
	ctx := context.Background()
	causes := make([]*signalmesh.Signal, count)
	for i := range causes {
		causes[i] = mustSignal(t, prefix+".order.created", signalmesh.WithSubject(fmt.Sprint(i)))
	}
	if err := a.Publish(ctx, causes...); err != nil {
		t.Error(err)
		return
	}
	ids := map[string]bool{}
	for _, c := range causes {
		ids[c.ID] = true
	}
	eventually(t, 30*time.Second, "causes at the effect's publisher", func() bool {
		n := 0
		for _, s := range bRec.snapshot() {
			if ids[s.ID] {
				n++
			}
		}
		return n == count
	})
	effects := make([]*signalmesh.Signal, count)
	for i, c := range causes {
		effects[i] = mustSignal(t, prefix+".payment.captured", signalmesh.WithCause(c))
	}
	if err := b.Publish(ctx, effects...); err != nil {
		t.Error(err)
	}
}

// checkDelivery: every recorder got every id in want exactly once, and each
// effect after its cause.
func checkDelivery(t *testing.T, name string, r *recorder, want map[string]bool) {
	t.Helper()
	got := r.snapshot()
	pos := map[string]int{}
	for i, s := range got {
		if _, dup := pos[s.ID]; dup {
			t.Fatalf("%s: %s delivered twice", name, s.ID)
		}
		pos[s.ID] = i
	}
	for id := range want {
		if _, ok := pos[id]; !ok {
			t.Fatalf("%s: %s never delivered (%d of %d)", name, id, len(got), len(want))
		}
	}
	for _, s := range got {
		if c := s.CauseID(); c != "" {
			if cp, ok := pos[c]; ok && cp > pos[s.ID] {
				t.Fatalf("%s: effect %s delivered before its cause %s", name, s.ID, c)
			}
		}
	}
}

func TestPartitionHeal(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 5, nil)
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("**", recs[i].handle, node.WithName("audit")); err != nil {
			t.Fatal(err)
		}
	}
	left, right := nodes[:2], nodes[2:]
	cut(left, right)
	eventually(t, 5*time.Second, "the cut", func() bool {
		for _, n := range left {
			for _, o := range right {
				if len(n.Host().Network().ConnsToPeer(o.ID())) > 0 {
					return false
				}
			}
		}
		return true
	})

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); publishChain(t, nodes[0], nodes[1], recs[1], "l", 500) }()
	go func() { defer wg.Done(); publishChain(t, nodes[2], nodes[3], recs[3], "r", 400) }()
	go func() {
		defer wg.Done()
		sigs := make([]*signalmesh.Signal, 200)
		for i := range sigs {
			sigs[i] = mustSignal(t, "r.sensor.reading")
		}
		if err := nodes[4].Publish(context.Background(), sigs...); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	if t.Failed() {
		return
	}
	// While cut, each side holds exactly its own 1,000.
	for i, n := range nodes {
		eventually(t, 30*time.Second, "side convergence", func() bool {
			c, _, _ := n.JournalDigest(context.Background())
			return c == 1000
		})
		if got := recs[i].count(); got != 1000 {
			t.Fatalf("node %d delivered %d during the cut, want its side's 1000", i, got)
		}
	}

	healed := time.Now()
	heal(t, nodes)
	journalsConverge(t, nodes, 2000, 60*time.Second)
	t.Logf("heal to identical journals (2,000 signals, 5 peers): %v", time.Since(healed))
	eventually(t, 30*time.Second, "every delivery", func() bool {
		for _, r := range recs {
			if r.count() < 2000 {
				return false
			}
		}
		return true
	})
	want := map[string]bool{}
	for s, err := range nodes[0].Replay(context.Background(), "**") {
		if err != nil {
			t.Fatal(err)
		}
		want[s.ID] = true
	}
	for i, r := range recs {
		checkDelivery(t, fmt.Sprintf("node %d", i), r, want)
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A node whose peers all went away (here: it was disconnected from each)
// finds its way back by itself, though it has no bootstrap list: it
// redials the mesh members it knew.
func TestNodeLeftAloneRedialsKnownPeers(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 3, nil)
	alone := nodes[2]
	// It knows them as mesh members once their subscriptions reached it
	// (a connection alone, cut at once, teaches it nothing to redial).
	eventually(t, 30*time.Second, "the lone node in a mesh with both", func() bool {
		st, err := alone.Status(ctx)
		return err == nil && st.Mesh == 2
	})
	for _, o := range nodes[:2] {
		if err := alone.Disconnect(o.ID()); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the lone node connected again", func() bool { return len(alone.Peers()) > 0 })
	s := mustSignal(t, "back.again")
	rec := newRecorder()
	if _, err := nodes[0].Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	if err := alone.Publish(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "its signal delivered elsewhere", func() bool { return rec.count() == 1 })
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
