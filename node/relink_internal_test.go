package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
)

// meshsubOut returns a's open outbound GossipSub stream to b, if any.
func meshsubOut(a, b *Node) network.Stream {
	for _, c := range a.host.Network().ConnsToPeer(b.self) {
		for _, s := range c.GetStreams() {
			if s.Stat().Direction == network.DirOutbound && strings.HasPrefix(string(s.Protocol()), "/meshsub/") {
				return s
			}
		}
	}
	return nil
}

// TestRelinkWhenGossipSubGivesUp: GossipSub gives up writing to a peer
// whose stream died four times within ten minutes while the connection
// stayed (each time it opens another, after a backoff; then never). Here
// a's stream to b is reset five times. Without the relinker nothing a
// publishes reaches b again (gossip and journal heads go over GossipSub);
// with it, a connects to b again and b delivers a's next signal.
func TestRelinkWhenGossipSubGivesUp(t *testing.T) {
	ctx := context.Background()
	mesh := fmt.Sprintf("relink-%d", time.Now().UnixNano())
	start := func() *Node {
		n, err := New(ctx, Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Params: Params{Discover: -1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	a, b := start(), start()
	got := make(chan string, 16)
	if _, err := b.Subscribe("relink.**", func(_ context.Context, s *signalmesh.Signal) error {
		got <- s.Type
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for i := range 5 {
		var s network.Stream
		await(fmt.Sprintf("a's stream to b (%d)", i+1), func() bool { s = meshsubOut(a, b); return s != nil })
		_ = s.Reset()
		await("a's stream reset", func() bool { return meshsubOut(a, b) != s })
	}
	sig, err := signalmesh.New("relink.after", "/test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, sig); err != nil {
		t.Fatal(err)
	}
	select {
	case typ := <-got:
		if typ != "relink.after" {
			t.Fatalf("b delivered %s", typ)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("b did not deliver a's signal (a relinked %d, a's stream to b open: %v)", a.m.relinked.Load(), meshsubOut(a, b) != nil)
	}
	if r := a.m.relinked.Load(); r != 1 {
		t.Fatalf("a relinked %d times, want 1", r)
	}
}

// TestRelinkAPeerOutsideTheTopic: a connected peer that GossipSub no
// longer counts in the signals topic (here it left the topic and stayed
// connected; GossipSub's race leaves a peer that way in the forgetting
// side's view) is connected to again relinkAfter later, once: the
// relinker closes the old connection and dials a new one.
func TestRelinkAPeerOutsideTheTopic(t *testing.T) {
	ctx := context.Background()
	mesh := fmt.Sprintf("relink-%d", time.Now().UnixNano())
	start := func() *Node {
		n, err := New(ctx, Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Params: Params{Discover: -1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	a, b := start(), start()
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	await("b in a's view of the topic", func() bool { return slices.Contains(a.topic.ListPeers(), b.self) })
	old := a.host.Network().ConnsToPeer(b.self)
	left := time.Now()
	b.sub.Cancel() // b leaves the topic, connected
	await("a relinked b", func() bool { return a.m.relinked.Load() == 1 })
	if since := time.Since(left); since < relinkAfter {
		t.Fatalf("relinked %v after b left, before relinkAfter (%v)", since, relinkAfter)
	}
	await("a connected to b again", func() bool {
		conns := a.host.Network().ConnsToPeer(b.self)
		return len(conns) > 0 && !slices.ContainsFunc(conns, func(c network.Conn) bool { return slices.Contains(old, c) })
	})
	for _, c := range old {
		if !c.IsClosed() {
			t.Fatal("the old connection is still open")
		}
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Relinked != 1 || st.Subscribed != 0 {
		t.Fatalf("a's status: relinked %d, subscribed %d; want 1, 0", st.Relinked, st.Subscribed)
	}
}

// writers.due hands a peer over once its stream has been down, or it
// has been outside the topic, relinkAfter, and not again within
// relinkEvery; a peer whose stream opened again, or that joined again, is
// forgotten.
func TestWritersDue(t *testing.T) {
	var w writers
	p, q, r := peer.ID("p"), peer.ID("q"), peer.ID("r")
	t0 := time.Unix(1000, 0)
	w.closed(p, t0)
	w.closed(q, t0)
	w.opened(q)
	w.leave(r, t0)
	w.leave(q, t0)
	w.join(q)
	w.slowFetch(q, true)
	w.slowFetch(q, false)
	if got, _ := w.due(t0.Add(time.Second), 2*time.Second, time.Minute); len(got) != 0 {
		t.Fatalf("due before the grace: %v", got)
	}
	got, left := w.due(t0.Add(2*time.Second), 2*time.Second, time.Minute)
	if slices.Sort(got); !slices.Equal(got, []peer.ID{p, r}) || left[p] || !left[r] {
		t.Fatalf("due after the grace: %v (left %v), want [p r] (left r)", got, left)
	}
	w.closed(p, t0.Add(3*time.Second))
	if got, _ := w.due(t0.Add(10*time.Second), 2*time.Second, time.Minute); len(got) != 0 {
		t.Fatalf("relinked again within relinkEvery: %v", got)
	}
	w.closed(p, t0.Add(70*time.Second))
	if got, _ := w.due(t0.Add(72*time.Second), 2*time.Second, time.Minute); !slices.Equal(got, []peer.ID{p}) {
		t.Fatalf("due a minute later: %v, want [p]", got)
	}
	w.slowFetch(q, true) // marked now: due relinkAfter from now
	if got, _ := w.due(time.Now().Add(time.Second), 2*time.Second, time.Minute); len(got) != 0 {
		t.Fatalf("slow fetch due before the grace: %v", got)
	}
	if got, left := w.due(time.Now().Add(3*time.Second), 2*time.Second, time.Minute); !slices.Equal(got, []peer.ID{q}) || left[q] {
		t.Fatalf("slow fetch due after the grace: %v (left %v), want [q]", got, left)
	}
}
