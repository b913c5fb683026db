package node

import (
	"context"
	"slices"
	"strconv"
	"testing"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	peerpkg "github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// stampedWires encodes signals of the peer whose key is key, with
// sequences from..to, stamped and signed.
func stampedWires(t *testing.T, key crypto.PrivKey, from, to uint64) [][]byte {
	t.Helper()
	id, err := peerpkg.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return stampedAs(t, id.String(), key, from, to)
}

// stampedAs is stampedWires with the signals naming peer as their origin,
// signed with key (nil: not signed).
func stampedAs(t *testing.T, peer string, key crypto.PrivKey, from, to uint64) [][]byte {
	t.Helper()
	var sigs []*signalmesh.Signal
	for seq := from; seq <= to; seq++ {
		s, err := signalmesh.New("order.created", "/shop", nil)
		if err != nil {
			t.Fatal(err)
		}
		s.ID = "id-" + strconv.FormatUint(seq, 10)
		if s.Extensions == nil {
			s.Extensions = map[string]any{}
		}
		s.Extensions[signalmesh.ExtPeer] = peer
		s.Extensions[signalmesh.ExtCausal] = causal.Stamp{Seq: seq, Lamport: seq}.Format()
		sigs = append(sigs, s)
	}
	if key != nil {
		if err := SignBatch("m", key, sigs); err != nil {
			t.Fatal(err)
		}
	}
	w, err := encodeAll(sigs)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A gossip message whose signals all lie at or below what the node has
// delivered of their origin without a gap is stale (validate ignores it
// without decoding the rest); one reaching past it, one whose first and
// last signals do not span its count, or one of an origin given up on
// below it, is not. A stale message's ends are decoded once: a message that
// is not stale reuses them.
func TestStaleFrame(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peerpkg.IDFromPrivateKey(key)
	origin := causal.PeerRef(id.String())
	n := &Node{ver: newVerifier("m")}
	n.m.init(nil)
	frame := func(w [][]byte) []byte {
		fs := frameWires(w)
		if len(fs) != 1 {
			t.Fatalf("%d messages, want 1", len(fs))
		}
		return fs[0]
	}
	ten := frame(stampedWires(t, key, 1, 10))
	if _, stale, _ := n.staleFrame(ten); stale {
		t.Fatal("stale before anything was delivered")
	}
	n.settled.set(origin, 9)
	if _, stale, _ := n.staleFrame(ten); stale {
		t.Fatal("stale with its last signal above the settled sequence")
	}
	n.settled.set(origin, 10)
	k, stale, ends := n.staleFrame(ten)
	if !stale || k != 10 {
		t.Fatalf("staleFrame = %d, %v; want 10, true", k, stale)
	}
	sigs, _, err := decodeFrameEnds(ten, signalmesh.Limits{}, ends)
	if err != nil || len(sigs) != 10 || sigs[0] != ends[0] || sigs[9] != ends[1] || sigs[4].ID != "id-5" {
		t.Fatalf("decodeFrameEnds: %d signals, %v", len(sigs), err)
	}
	one := stampedWires(t, key, 3, 3)[0]
	if k, stale, _ := n.staleFrame(one); !stale || k != 1 {
		t.Fatalf("one settled signal: %d, %v; want 1, true", k, stale)
	}
	// first 1 and last 10 but 3 signals: not an honest frame, checked in full
	w := stampedWires(t, key, 1, 10)
	if _, stale, _ := n.staleFrame(frame([][]byte{w[0], w[4], w[9]})); stale {
		t.Fatal("a frame whose ends do not span its count is stale")
	}
	otherKey, _, _ := crypto.GenerateEd25519Key(nil)
	other := stampedWires(t, otherKey, 10, 10)
	if _, stale, _ := n.staleFrame(frame([][]byte{w[8], other[0]})); stale {
		t.Fatal("a frame of two origins is stale")
	}
	// Forged ends (unsigned, or changed after signing) are not stale: the
	// message is checked in full, and its sender pays for it.
	forged := stampedAs(t, id.String(), nil, 2, 2)[0]
	if _, stale, _ := n.staleFrame(forged); stale {
		t.Fatal("an unsigned signal at a settled place is stale")
	}
	bad := append([]byte(nil), w[9]...)
	bad[len(bad)/2] ^= 1
	if _, stale, _ := n.staleFrame(frame(append(slices.Clone(w[:9]), bad))); stale {
		t.Fatal("a frame whose last signal does not verify is stale")
	}
	fwd := peerpkg.ID("relay")
	res := n.validate(context.Background(), fwd, &pubsub.Message{Message: &pb.Message{Data: forged}, ReceivedFrom: fwd})
	if _, rej := n.m.snapshot(); res != pubsub.ValidationReject || rej["signature"] != 1 || n.penalties.score(fwd) >= 0 {
		t.Fatalf("a forged signal at a settled place: %v, rejected %v, score %v; want rejected for its signature, a penalty", res, rej, n.penalties.score(fwd))
	}
	if _, stale, _ := n.staleFrame([]byte{frameMagic, 3, 1}); stale {
		t.Fatal("a malformed frame is stale")
	}

	// What the core gave up on can still come late: settled stops below it.
	c, err := causal.New[int](causal.Params{Limit: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if _, err := c.Add(causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: seq, Lamport: seq}, ID: strconv.FormatUint(seq, 10)}, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Settled(origin); got != 3 {
		t.Fatalf("Settled = %d, want 3", got)
	}
	c.Decide(causal.Ref{Origin: origin, Seq: 6}, causal.Decision{GapFrom: 4}) // given up on 4-5 before a restart
	if _, err := c.Add(causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: 6, Lamport: 6}, ID: "6"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if c.DeliveredOf(origin) != 6 || c.Settled(origin) != 3 {
		t.Fatalf("after skipping 4-5: Delivered %d, Settled %d; want 6, 3", c.DeliveredOf(origin), c.Settled(origin))
	}
}
