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

// relinkPair starts two in-memory nodes of one mesh (discovery off); the
// caller connects them.
func relinkPair(t *testing.T) (a, b *Node) {
	t.Helper()
	mesh := fmt.Sprintf("relink-%d", time.Now().UnixNano())
	start := func() *Node {
		n, err := New(context.Background(), Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Params: Params{Discover: -1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	return start(), start()
}

// await polls cond until it holds, for at most 20 s.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRelinkWhenGossipSubGivesUp: GossipSub gives up writing to a peer
// whose stream died four times within ten minutes while the connection
// stayed (each time it opens another, after a backoff; then never). Here
// a's stream to b is reset five times, and both watches of the topic
// are off. Without the relinker nothing a publishes reaches b again
// (gossip and journal heads go over GossipSub); with it, a connects to b
// again and b delivers a's next signal.
func TestRelinkWhenGossipSubGivesUp(t *testing.T) {
	ctx := context.Background()
	a, b := relinkPair(t)
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
	// Each reset also makes a forget b's subscriptions (b's stream stays,
	// and b does not announce them again): a relink for the topic, which
	// TestRelinkAPeerOutsideTheTopic covers. Here only the stream counts.
	a.sigJoins.Cancel()
	b.sigJoins.Cancel() // b sees a leave the topic when a gives up its stream
	for i := range 5 {
		var s network.Stream
		await(t, fmt.Sprintf("a's stream to b (%d)", i+1), func() bool { s = meshsubOut(a, b); return s != nil })
		_ = s.Reset()
		await(t, "a's stream reset", func() bool { return meshsubOut(a, b) != s })
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
	// Either side may repair it: a (its stream to b stays closed) or b
	// (its inbound stream from a ended, and a's was the one to go).
	ca, cb := a.writers.counts(), b.writers.counts()
	if ca[relinkStream]+cb[relinkStream] < 1 || ca[relinkTopic]+cb[relinkTopic] != 0 {
		t.Fatalf("relinks by reason: a %v, b %v; want one for a stream (of a or b), none for the topic", ca, cb)
	}
}

// TestRelinkAPeerOutsideTheTopic: a connected peer that GossipSub no
// longer counts in the signals topic (here it left the topic and stayed
// connected; GossipSub's race leaves a peer that way in the forgetting
// side's view) is connected to again relinkAfter later, once: the
// relinker closes the old connection and dials a new one.
func TestRelinkAPeerOutsideTheTopic(t *testing.T) {
	ctx := context.Background()
	a, b := relinkPair(t)
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	await(t, "b in a's view of the topic", func() bool { return slices.Contains(a.topic.ListPeers(), b.self) })
	old := a.host.Network().ConnsToPeer(b.self)
	left := time.Now()
	b.sub.Cancel() // b leaves the topic, connected
	await(t, "a relinked b", func() bool { return a.m.relinked.Load() == 1 })
	if since := time.Since(left); since < relinkAfter {
		t.Fatalf("relinked %v after b left, before relinkAfter (%v)", since, relinkAfter)
	}
	await(t, "a connected to b again", func() bool {
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
	if c := a.writers.counts(); c[relinkTopic] != 1 {
		t.Fatalf("a's relinks by reason %v, want one for the topic", c)
	}
}

// writers.due hands a marked peer over once it has been marked
// relinkAfter, with its first reason, and not again within relinkEvery
// (still marked: it comes back once that has passed); a peer whose mark
// was cleared is not handed over.
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
	if got := w.due(t0.Add(time.Second), 2*time.Second, time.Minute); len(got) != 0 {
		t.Fatalf("due before the grace: %v", got)
	}
	got := w.due(t0.Add(2*time.Second), 2*time.Second, time.Minute)
	slices.SortFunc(got, func(a, b candidate) int { return strings.Compare(string(a.p), string(b.p)) })
	if !slices.Equal(got, []candidate{{p, relinkStream}, {r, relinkTopic}}) {
		t.Fatalf("due after the grace: %v, want p (stream) and r (topic)", got)
	}
	w.relinked(got[0], t0.Add(2*time.Second))
	w.closed(p, t0.Add(3*time.Second))
	if got := w.due(t0.Add(10*time.Second), 2*time.Second, time.Minute); !slices.Equal(got, []candidate{{r, relinkTopic}}) {
		t.Fatalf("due within relinkEvery of p's relink: %v, want r only", got)
	}
	if got := w.due(t0.Add(63*time.Second), 2*time.Second, time.Minute); len(got) != 2 {
		t.Fatalf("due once relinkEvery has passed: %v, want p and r", got)
	}
	if c := w.counts(); c != [relinkKinds]int64{1, 0, 0} {
		t.Fatalf("counts %v", c)
	}
}
