package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// Ephemeral edge peers, in memory, each connect to a hub, publish one
// signal, wait until the hub delivers it, and close cleanly, one after the
// other. Every signal must be delivered by the hub, be in its journal, and
// reach a peer that joins after they all left; the hub must not stall on
// blocks of departed peers.
func TestEphemeralPublishersLoseNothing(t *testing.T) {
	t.Run("hand-off", func(t *testing.T) { ephemeralPublishers(t, 0) })
	// Without the hand-off (as after a kill -9): the hub adopts what it
	// delivered, and blocks that only the departed peers had do not stall it.
	t.Run("no hand-off", func(t *testing.T) { ephemeralPublishers(t, -1) })
}

func ephemeralPublishers(t *testing.T, handOff time.Duration) {
	checkLeaks(t)
	ctx := context.Background()
	hub := cluster(t, 1, nil)[0]
	got := newRecorder()
	if _, err := hub.Subscribe("edge.**", got.handle); err != nil {
		t.Fatal(err)
	}
	const edges = 10
	var sent []*signalmesh.Signal
	for i := range edges {
		edge, err := node.New(ctx, node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
			Params: node.Params{HandOff: handOff}})
		if err != nil {
			t.Fatal(err)
		}
		if err := edge.Connect(ctx, hub.AddrInfo()); err != nil {
			t.Fatal(err)
		}
		x := mustSignal(t, "edge.reading")
		if err := edge.Publish(ctx, x); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, x)
		eventually(t, 30*time.Second, "the hub delivers the reading", func() bool { return got.count() == i+1 })
		if err := edge.Close(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "every reading in the hub's journal", func() bool {
		c, _, err := hub.JournalDigest(ctx)
		return err == nil && c == edges
	})
	rec := joinLate(t, hub.Node, "edge.**")
	eventually(t, 30*time.Second, "a peer that joins later gets every reading", func() bool { return rec.count() == edges })
	for _, x := range sent {
		if got.seen[x.ID] != 1 || rec.seen[x.ID] != 1 {
			t.Fatalf("%s: hub handled it %d times, the late peer %d", x.ID, got.seen[x.ID], rec.seen[x.ID])
		}
	}
}

// An edge peer in memory publishes while its hub is restarting and closes
// before the hub is back: Close waits, within HandOff, for the redialer to
// bring the hub back and hands its signal over. Before, Close returned at
// once when no peer was connected and the signal went with the edge.
func TestCloseWaitsForABootstrapPeerToComeBack(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	hubCfg := node.Config{Mesh: "handoff-back", DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	hub, err := node.New(ctx, hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	ai := hub.AddrInfo()
	hubCfg.ListenAddrs = []string{ai.Addrs[0].String()} // the same address when it comes back
	edge, err := node.New(ctx, node.Config{Mesh: "handoff-back", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Bootstrap: []peer.AddrInfo{ai}, Params: node.Params{Redial: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge connected", func() bool { return len(edge.Peers()) > 0 })
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge alone", func() bool { return len(edge.Peers()) == 0 })
	x := mustSignal(t, "edge.reading")
	if err := edge.Publish(ctx, x); err != nil { // journaled on the edge only
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- edge.Close() }()
	hub, err = node.New(ctx, hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the hub holds the edge's signal", func() bool {
		s, err := hub.Get(ctx, x.ID)
		return err == nil && s.ID == x.ID
	})
}
