package node

import (
	"context"
	"strconv"
	"testing"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	peerpkg "github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
)

// A frame of journaled signals this node asked a peer for (GossipSub's
// repair: the peer's IHAVE named it, this node's IWANT asked for it) is
// delivered here but not passed on (ignored, so GossipSub neither forwards
// it nor gossips it). After a partition heals each side asks the other for
// its last frames this way, and every one of them was forwarded through
// the asking side's whole mesh beside the journal path bringing the same
// signals. A frame pushed to this node (by its origin or a mesh peer) is
// accepted and passed on, and so is an asked-for frame of signals the
// journal does not carry (Weak), whose only repair is GossipSub's.
func TestAskedForFrameDeliveredNotForwarded(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := peerpkg.IDFromPrivateKey(key)
	newNode := func() (*Node, tracer) {
		n := &Node{ver: newVerifier("m"), inbox: make(chan inbound, 16)}
		n.m.init(nil)
		return n, tracer{m: &n.m, asked: &n.asked}
	}
	frame := func(w [][]byte) []byte {
		fs := frameWires(w)
		if len(fs) != 1 {
			t.Fatalf("%d messages, want 1", len(fs))
		}
		return fs[0]
	}
	msgOf := func(data []byte, from peerpkg.ID) *pubsub.Message {
		m := &pubsub.Message{Message: &pb.Message{Data: data}, ReceivedFrom: from}
		m.ID = messageID(m.Message)
		return m
	}
	iwant := func(tr tracer, ids ...string) {
		tr.SendRPC(&pubsub.RPC{RPC: pb.RPC{Control: &pb.ControlMessage{Iwant: []*pb.ControlIWant{{MessageIDs: ids}}}}}, "peer")
	}
	validate := func(n *Node, m *pubsub.Message) pubsub.ValidationResult {
		return n.validate(context.Background(), m.ReceivedFrom, m)
	}
	relay := peerpkg.ID("relay")
	journaled := msgOf(frame(stampedWires(t, key, 1, 3)), relay)

	n, tr := newNode()
	iwant(tr, "other", journaled.ID)
	if res := validate(n, journaled); res != pubsub.ValidationIgnore {
		t.Fatalf("asked-for journaled frame: %v, want ignored (not passed on)", res)
	}
	if len(n.inbox) != 3 {
		t.Fatalf("asked-for journaled frame: %d signals handed to the loop, want 3", len(n.inbox))
	}
	for i := uint64(1); i <= 3; i++ {
		in := <-n.inbox
		if in.via != viaGossip || in.meta == nil || in.meta.Seq != i || in.s == nil {
			t.Fatalf("signal %d handed over as %+v", i, in)
		}
	}
	if got := n.m.secondHand.Load(); got != 1 {
		t.Fatalf("second-hand frames counted %d, want 1", got)
	}
	// Asked once, taken once: the same message again is a duplicate
	// GossipSub itself drops; if it came as a new push it is passed on.
	if res := validate(n, journaled); res != pubsub.ValidationAccept || len(n.inbox) != 0 {
		t.Fatalf("the frame again, not asked for: %v, %d handed over directly; want accepted", res, len(n.inbox))
	}

	n, _ = newNode()
	if res := validate(n, journaled); res != pubsub.ValidationAccept || len(n.inbox) != 0 {
		t.Fatalf("pushed frame: %v, %d handed over directly; want accepted (readGossip delivers it)", res, len(n.inbox))
	}

	weak, err := signalmesh.New("order.created", "/shop", nil)
	if err != nil {
		t.Fatal(err)
	}
	weak.Extensions = map[string]any{signalmesh.ExtPeer: origin.String()}
	if err := SignBatch("m", key, []*signalmesh.Signal{weak}); err != nil {
		t.Fatal(err)
	}
	w, err := encodeAll([]*signalmesh.Signal{weak})
	if err != nil {
		t.Fatal(err)
	}
	n, tr = newNode()
	weakMsg := msgOf(frame(w), relay)
	iwant(tr, weakMsg.ID)
	if res := validate(n, weakMsg); res != pubsub.ValidationAccept || len(n.inbox) != 0 {
		t.Fatalf("asked-for weak frame: %v, %d handed over directly; want accepted and passed on", res, len(n.inbox))
	}

	// A full inbox: what does not fit is left to the journal, counted.
	n, tr = newNode()
	n.inbox = make(chan inbound, 1)
	iwant(tr, journaled.ID)
	if res := validate(n, journaled); res != pubsub.ValidationIgnore || len(n.inbox) != 1 {
		t.Fatalf("asked-for frame, inbox of 1: %v, %d handed over; want ignored, 1", res, len(n.inbox))
	}
	if got := n.m.secondHandLeft.Load(); got != 2 {
		t.Fatalf("signals left to the journal: %d, want 2", got)
	}
}

// asked holds the newest askedCap ids: the oldest makes room, and an id
// asked again keeps its newest place.
func TestAskedBounded(t *testing.T) {
	var a asked
	a.add([]string{"a", "b"})
	for i := range askedCap - 3 {
		a.add([]string{strconv.Itoa(i)})
	}
	a.add([]string{"a"})      // asked again: the last slot
	a.add([]string{"x", "y"}) // the first two slots: a's old one, then b's
	if len(a.at) != askedCap {
		t.Fatalf("%d ids held, want %d", len(a.at), askedCap)
	}
	if !a.take("a") {
		t.Fatal("an id asked again was forgotten with its old slot")
	}
	if a.take("b") {
		t.Fatal("the oldest id is still held past askedCap")
	}
	if !a.take("0") || a.take("0") {
		t.Fatal("take: a held id once, then not")
	}
}
