package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/signalmesh/signalmesh"
)

func ihaveRPC(entries ...*pb.ControlIHave) *pubsub.RPC {
	return &pubsub.RPC{RPC: pb.RPC{Control: &pb.ControlMessage{Ihave: entries,
		Graft: []*pb.ControlGraft{{TopicID: ptr("sig")}}}}}
}

func ptr(s string) *string { return &s }

func topicsOf(ctl *pb.ControlMessage) (out []string) {
	for _, ih := range ctl.Ihave {
		out = append(out, ih.GetTopicID())
	}
	return out
}

// Gossip (IHAVE) on the signals topic from a newly connected peer names
// frames published before the two were connected (after a heal, each
// side's last commit batches): it is left out of the RPC, and the journal
// brings those signals. Gossip on other topics, the rest of the RPC, and
// signals gossip from a peer connected longer are kept. Whether the sender
// is young is asked only when there is signals gossip.
func TestDropIHaveFromNewPeers(t *testing.T) {
	rpc := ihaveRPC(
		&pb.ControlIHave{TopicID: ptr("journal"), MessageIDs: []string{"h1"}},
		&pb.ControlIHave{TopicID: ptr("sig"), MessageIDs: []string{"f1", "f2"}},
		&pb.ControlIHave{TopicID: ptr("leases"), MessageIDs: []string{"l1"}},
		&pb.ControlIHave{TopicID: ptr("sig"), MessageIDs: []string{"f3"}},
	)
	asked := 0
	young := func() bool { asked++; return true }
	if left := dropIHave(rpc.Control, "sig", young); left != 3 || asked != 1 {
		t.Fatalf("young sender: %d ids left out, young asked %d times; want 3, 1", left, asked)
	}
	if got := topicsOf(rpc.Control); !slices.Equal(got, []string{"journal", "leases"}) || len(rpc.Control.Graft) != 1 {
		t.Fatalf("young sender: kept gossip on %v, %d grafts; want journal and leases, 1", got, len(rpc.Control.Graft))
	}

	rpc = ihaveRPC(&pb.ControlIHave{TopicID: ptr("sig"), MessageIDs: []string{"f1"}}, &pb.ControlIHave{TopicID: ptr("journal"), MessageIDs: []string{"h1"}})
	if left := dropIHave(rpc.Control, "sig", func() bool { return false }); left != 0 || len(rpc.Control.Ihave) != 2 {
		t.Fatalf("sender connected longer: %d left out, %d entries kept; want 0, 2", left, len(rpc.Control.Ihave))
	}
	rpc = ihaveRPC(&pb.ControlIHave{TopicID: ptr("journal"), MessageIDs: []string{"h1"}})
	if left := dropIHave(rpc.Control, "sig", func() bool { t.Fatal("young asked without signals gossip"); return true }); left != 0 {
		t.Fatalf("no signals gossip: %d left out", left)
	}
}

// A node's inspector judges a peer by its connection: one connected just
// now has its signals gossip left out and counted (Status.GossipLeft);
// with the gossip window passed it is kept. A node that resumed a journal
// keeps the gossip of the peers it met as it started (its way to what was
// published while it was down). A node without a mesh on the signals
// topic keeps all gossip (it may be its only path).
func TestInspectRPCJudgesConnectionAge(t *testing.T) {
	a, b := relinkPair(t)
	gossip := func() *pubsub.RPC {
		return ihaveRPC(&pb.ControlIHave{TopicID: ptr(a.sigTopic), MessageIDs: []string{"f1", "f2"}})
	}
	rpc := gossip()
	a.leaveYoungGossip("stranger", rpc, time.Hour)
	if len(rpc.Control.Ihave) != 1 {
		t.Fatal("a node without a mesh left gossip out")
	}
	if err := a.Connect(context.Background(), b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if since, ok := a.connSince.connectedSince(b.self); !ok || time.Since(since) > time.Minute {
		t.Fatalf("connected since %v (%v) just after connecting", since, ok)
	}
	if _, ok := a.connSince.connectedSince(peer.ID("nobody")); ok {
		t.Fatal("connected to a stranger")
	}
	if a.gossipWindow != 3*time.Second {
		t.Fatalf("gossip window %v, want GossipSub's 3 heartbeats of 1 s", a.gossipWindow)
	}
	await(t, "a mesh on the signals topic", func() bool { return a.m.meshSize() > 0 })
	before, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rpc = gossip()
	a.leaveYoungGossip(b.self, rpc, time.Hour) // connected for less than an hour
	if len(rpc.Control.Ihave) != 0 {
		t.Fatalf("signals gossip from a peer just connected: %d entries kept; want none", len(rpc.Control.Ihave))
	}
	st, err := a.Status(context.Background())
	if err != nil || st.GossipLeft-before.GossipLeft != 2 {
		t.Fatalf("Status.GossipLeft went up by %d (%v), want 2", st.GossipLeft-before.GossipLeft, err)
	}
	rpc = gossip()
	a.leaveYoungGossip(b.self, rpc, 0) // as if the window had passed since connecting
	if len(rpc.Control.Ihave) != 1 {
		t.Fatalf("signals gossip from a peer connected longer: %d entries kept; want 1", len(rpc.Control.Ihave))
	}
	a.connSince.resumed() // as if a had restarted on its journal: b connected within an hour of its start
	rpc = gossip()
	a.leaveYoungGossip(b.self, rpc, time.Hour)
	if len(rpc.Control.Ihave) != 1 {
		t.Fatalf("signals gossip from a peer a restarted node met as it started: %d entries kept; want 1", len(rpc.Control.Ihave))
	}
}

// A node that reopens a journal it had is marked restarted for the
// inspector (the peers it meets as it comes back are not newcomers); a
// node on a fresh store is not.
func TestRestartedNodeMeetsItsPeers(t *testing.T) {
	ctx := context.Background()
	cfg := Config{Mesh: fmt.Sprintf("meet-%d", time.Now().UnixNano()), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		DataDir: t.TempDir(), Params: Params{Discover: -1}}
	restarted := func(n *Node) bool {
		n.connSince.mu.Lock()
		defer n.connSince.mu.Unlock()
		return n.connSince.restarted
	}
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if restarted(n) {
		_ = n.Close()
		t.Fatal("a node on a fresh store is marked restarted")
	}
	s, err := signalmesh.New("meet.x", "/test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, s); err != nil {
		t.Fatal(err)
	}
	await(t, "journaled", func() bool { return n.m.journaled.Load() >= 1 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !restarted(n) {
		t.Fatal("a node reopened on its journal is not marked restarted")
	}
}

// A newcomer is a peer connected for less than the window, unless the
// node restarted and the peer connected within the window of its first
// connection since. One not connected is a newcomer.
func TestNewcomerJoinedARunningNode(t *testing.T) {
	now, w := time.Now(), time.Minute
	l := connSince{since: map[peer.ID]time.Time{}}
	l.opened("young", now.Add(-10*time.Second))
	l.opened("old", now.Add(-2*time.Minute))
	if !l.newcomer("young", w) || l.newcomer("old", w) || !l.newcomer("absent", w) {
		t.Fatalf("fresh node: newcomers young %v, old %v, absent %v; want true, false, true",
			l.newcomer("young", w), l.newcomer("old", w), l.newcomer("absent", w))
	}

	r := connSince{since: map[peer.ID]time.Time{}}
	r.opened("first", now.Add(-30*time.Second)) // before the restart was known
	r.resumed()
	r.opened("met", now.Add(-10*time.Second)) // 20 s after the first
	if r.newcomer("first", w) || r.newcomer("met", w) {
		t.Fatalf("restarted node: newcomers first %v, met %v; want false, false", r.newcomer("first", w), r.newcomer("met", w))
	}

	q := connSince{since: map[peer.ID]time.Time{}}
	q.resumed() // no connection yet
	q.opened("first", now.Add(-2*time.Minute))
	q.opened("late", now.Add(-10*time.Second)) // 110 s after the first
	if q.newcomer("first", w) || !q.newcomer("late", w) {
		t.Fatalf("restarted node: newcomers first %v, late %v; want false, true", q.newcomer("first", w), q.newcomer("late", w))
	}
}

// A peer keeps its time while any connection to it stays open: a relayed
// link replaced by a direct one (the direct one opens, then the relayed
// one closes) is not a new peer. Once the last connection closes, the next
// one starts afresh.
func TestConnSinceKeepsAnUnbrokenLink(t *testing.T) {
	l := connSince{since: map[peer.ID]time.Time{}}
	relayed := time.Now().Add(-time.Minute)
	l.opened("p", relayed)
	l.opened("p", time.Now()) // the direct connection
	l.closed("p", true)       // the relayed one goes, the direct one stays
	if got := l.since["p"]; !got.Equal(relayed) {
		t.Fatalf("after a relayed link gave way to a direct one: since %v, want %v", got, relayed)
	}
	l.closed("p", false)
	if _, ok := l.since["p"]; ok {
		t.Fatal("a peer without connections is still held")
	}
	again := time.Now()
	l.opened("p", again)
	if got := l.since["p"]; !got.Equal(again) {
		t.Fatalf("connected again: since %v, want %v", got, again)
	}
}
