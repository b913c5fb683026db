package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/node"
)

// joinFrom starts a SnapshotJoin node bootstrapped from p, subscribed to **.
func joinFrom(t *testing.T, p *peerNode) (*node.Node, *recorder) {
	t.Helper()
	j, err := node.New(context.Background(), node.Config{Mesh: p.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{p.AddrInfo()}, SnapshotJoin: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	rec := newRecorder()
	if _, err := j.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	return j, rec
}

// Review: the snapshot's state (delivered marks, tops, the id filter) is
// taken from the provider unchecked; only its entries are checked ("Every
// signal of a snapshot is checked as one from a journal block"). The doc
// names only omission as what a hostile provider can do ("makes the joiner
// miss them until they are written again"). A provider that raises one
// origin's delivered mark (and its top, which the clamp trusts) silences
// that origin at the joiner for good: every later signal of it is a
// duplicate there.
func TestReviewForgedDeliveredMarkSilencesAnOrigin(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	hub, bad := nodes[0], nodes[1]
	if err := hub.Publish(ctx, mustSignal(t, "old.x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "bad's journal", func() bool {
		c, _, err := bad.JournalDigest(ctx)
		return err == nil && c == 1
	})
	hubRef := node.PeerRefOf(hub.ID())
	node.ServeForgedSnapshot(bad.Node, func(core *causal.State, tops map[string]uint64, _ []uint64) {
		core.Delivered[hubRef] = 1 << 40
		tops[hubRef] = 1 << 40
	})
	j, rec := joinFrom(t, bad)
	if err := j.Connect(ctx, hub.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	fresh := mustSignal(t, "new.y")
	if err := hub.Publish(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the hub's new signal at a joiner of a hostile provider", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[fresh.ID] == 1
	})
}

// Review: the same provider's id filter, all ones, makes Gone answer yes
// for every id: at the joiner, for good (it is kept in the store), an
// effect is delivered at once before its cause, which arrives a second
// later; an honest join holds it for its cause.
func TestReviewForgedGoneFilterBreaksCausalOrder(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 3, nil)
	hub, other, bad := nodes[0], nodes[1], nodes[2]
	if err := hub.Publish(ctx, mustSignal(t, "old.x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "bad's journal", func() bool {
		c, _, err := bad.JournalDigest(ctx)
		return err == nil && c == 1
	})
	node.ServeForgedSnapshot(bad.Node, func(core *causal.State, _ map[string]uint64, seen []uint64) {
		for i := range seen {
			seen[i] = ^uint64(0)
		}
		for i := range core.Bloom {
			core.Bloom[i] = ^uint64(0)
		}
	})
	j, rec := joinFrom(t, bad)
	for _, p := range []*peerNode{hub, other} {
		if err := j.Connect(ctx, p.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // the joiner in the signals topic's mesh
	cause := mustSignal(t, "cause")
	effect := mustSignal(t, "effect", signalmesh.WithCause(cause))
	if err := other.Publish(ctx, effect); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := hub.Publish(ctx, cause); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "both at the joiner", func() bool { return rec.count() == 2 })
	if got := rec.snapshot(); got[0].ID != cause.ID {
		t.Fatalf("the joiner delivered %s before its cause %s", got[0].Type, got[1].Type)
	}
}
