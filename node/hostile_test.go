package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"

	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/internal/seal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/vclock"
)

// attacker is a bare libp2p peer on the mesh's signals topic; it returns
// the topic, its peer id and its key. Its GossipSub signs nothing, as a
// node's does, unless gossipSigning (an older node's StrictSign), whose
// messages nodes refuse.
func attacker(t *testing.T, target *peerNode, gossipSigning bool) (*pubsub.Topic, peer.ID, crypto.PrivKey) {
	t.Helper()
	return attackerOn(t, target, "signals", gossipSigning)
}

// attackerOn is attacker on another of the mesh's topics (kind: "acks",
// "leases", ...).
func attackerOn(t *testing.T, target *peerNode, kind string, gossipSigning bool) (*pubsub.Topic, peer.ID, crypto.PrivKey) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts := []pubsub.Option{pubsub.WithFloodPublish(true)}
	if !gossipSigning {
		opts = append(opts, pubsub.WithNoAuthor(), pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
			pubsub.WithMessageIdFn(func(m *pb.Message) string { h := sha256.Sum256(m.Data); return string(h[:]) }))
	}
	ps, err := pubsub.NewGossipSub(ctx, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join("/signalmesh/" + target.Mesh() + "/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topic.Close(); cancel(); _ = h.Close() })
	if err := h.Connect(ctx, target.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "attacker in the topic mesh", func() bool { return len(topic.ListPeers()) > 0 })
	return topic, h.ID(), h.Peerstore().PrivKey(h.ID())
}

// signedWire signs s with key, as a peer of mesh, and returns its wire form.
func signedWire(t testing.TB, mesh string, key crypto.PrivKey, s *signalmesh.Signal) []byte {
	t.Helper()
	if err := node.Sign(mesh, key, s); err != nil {
		t.Fatal(err)
	}
	w, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestHostileGossipIsRejectedAndCounted(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	victim, bystander := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := victim.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}

	// One attacker per message: the first rejected message of a peer
	// graylists it (peer scoring), and GossipSub ignores the rest unread.
	oversized := make([]byte, 600<<10)
	_, _ = rand.Read(oversized)
	oversized[0] = 1
	// A well-formed signal that claims to come from the bystander, which
	// did not sign it.
	forged := mustSignal(t, "order.created",
		signalmesh.WithExtension(signalmesh.ExtPeer, bystander.ID().String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "1/1/"))
	wire, _ := forged.MarshalBinary()
	for _, m := range [][]byte{[]byte("not a signal"), oversized, wire} {
		bad, _, _ := attacker(t, victim, false)
		if err := bad.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	gossipSigned, _, _ := attacker(t, victim, true)
	weak, _ := mustSignal(t, "presence.ping").MarshalBinary()
	if err := gossipSigned.Publish(ctx, weak); err != nil {
		t.Fatal(err)
	}

	eventually(t, 10*time.Second, "every hostile message counted", func() bool {
		st, err := victim.Status(ctx)
		return err == nil && st.Rejected["decode"] >= 2 && st.Rejected["signature"] >= 1 &&
			st.Rejected["gossip: "+pubsub.RejectUnexpectedSignature] >= 1
	})
	// The victim still works, and nothing hostile reached a handler or was forwarded.
	good := mustSignal(t, "order.paid")
	if err := bystander.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a good signal after the attack", func() bool { return rec.count() >= 1 })
	if got := rec.snapshot(); len(got) != 1 || got[0].ID != good.ID {
		t.Fatalf("handler saw %v", got)
	}
	st, _ := bystander.Status(ctx)
	if len(st.Rejected) != 0 {
		t.Fatalf("the victim forwarded hostile messages: bystander rejected %v", st.Rejected)
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPrivateNetworkNeedsTheKey(t *testing.T) {
	checkLeaks(t)
	key := make(pnet.PSK, 32)
	_, _ = rand.Read(key)
	members := cluster(t, 2, func(_ int, c *node.Config) {
		c.ListenAddrs = nil // the defaults: QUIC is left out under a PSK
		c.PSK = key
	})
	if len(members[0].Peers()) != 1 {
		t.Fatalf("members did not connect: %v", members[0].Peers())
	}
	other := make(pnet.PSK, 32)
	_, _ = rand.Read(other)
	for name, psk := range map[string]pnet.PSK{"no key": nil, "another key": other} {
		outsider, err := node.New(context.Background(), node.Config{Mesh: members[0].Mesh(),
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, PSK: psk, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = outsider.Connect(ctx, members[0].AddrInfo())
		cancel()
		if err == nil {
			t.Errorf("%s: an outsider connected to the private network", name)
		}
		if err := outsider.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(members[0].Peers()) != 1 {
		t.Fatalf("member peers after the attempts: %v", members[0].Peers())
	}
	for _, n := range members {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A peer that publishes its fifth signal without the first four leaves it
// waiting; the node reports the gap after CauseTimeout instead of waiting in
// silence, and keeps delivering everything else.
func TestMissingCauseIsReported(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 1, func(_ int, c *node.Config) {
		c.Params.CauseTimeout = 100 * time.Millisecond
		c.Params.Resync = 20 * time.Millisecond
	})
	n := nodes[0]
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	topic, id, key := attacker(t, n, false)
	orphan := mustSignal(t, "orphan.effect",
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "5/5/"))
	wire := signedWire(t, n.Mesh(), key, orphan)
	if err := topic.Publish(ctx, wire); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the missing cause reported", func() bool {
		st, err := n.Status(ctx)
		return err == nil && st.Dropped["missing_cause"] == 1 && st.Buffered == 1 &&
			len(st.Missing) == 1 && st.Missing[0] == vclock.Gap{Origin: id.String(), From: 1, To: 4} && len(st.MissingCauses) == 0
	})
	if err := n.Publish(ctx, mustSignal(t, "still.working")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "other signals still delivered", func() bool { return rec.count() == 1 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// Control messages (acks, leases, address announcements) are sealed by
// their sender: one without a seal, or sealed for another topic, is
// refused and counted.
func TestUnsealedControlMessagesAreRejected(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	acks, _, key := attackerOn(t, n, "acks", false)
	leases, _, _ := attackerOn(t, n, "leases", false)
	elsewhere, err := seal.Seal(key, "/signalmesh/"+n.Mesh()+"/peers", []byte{'A', 0})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{{'A', 0}, elsewhere} {
		if err := acks.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := leases.Publish(ctx, []byte(`{"entries":[]}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the unsealed control messages refused", func() bool {
		st, err := n.Status(ctx)
		return err == nil && st.Rejected["ack"] == 2 && st.Rejected["lease_message"] == 1
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A GossipSub message with a signature, or an author and sequence number,
// is refused (nodes run StrictNoSign) and counted, and reaches no handler.
func TestGossipAuthorOrSignatureIsRejectedAndCounted(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 1, nil)
	n := nodes[0]
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	h, send := rawGossip(t, n)
	data, _ := mustSignal(t, "forged.thing").MarshalBinary()
	topic := "/signalmesh/" + n.Mesh() + "/signals"
	// Messages carry no author, sequence number or signature: the
	// signals are signed by their origin.
	rpc := &pb.RPC{Publish: []*pb.Message{{
		From: []byte(h.ID()), Data: data, Seqno: []byte{0, 0, 0, 0, 0, 0, 0, 1}, Topic: &topic,
		Signature: bytes.Repeat([]byte{7}, 64),
	}, {
		From: []byte(h.ID()), Data: data, Seqno: []byte{0, 0, 0, 0, 0, 0, 0, 2}, Topic: &topic,
	}}}
	send(rpc)
	eventually(t, 10*time.Second, "the signed and the authored message counted", func() bool {
		s, err := n.Status(ctx)
		return err == nil && s.Rejected["gossip: "+pubsub.RejectUnexpectedSignature] == 1 &&
			s.Rejected["gossip: "+pubsub.RejectUnexpectedAuthInfo] == 1
	})
	if rec.count() != 0 {
		t.Fatalf("a forged message reached a handler: %v", rec.snapshot())
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A signal whose predecessor no peer has (its publisher died before anyone
// had the first) is delivered after DepWait, not held for good with every
// later signal of its origin; the predecessor, if it turns up after all,
// is delivered late, also to a named subscription whose cursor is past it.
func TestLostPredecessorIsGivenUpAfterDepWait(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 1, func(_ int, c *node.Config) {
		c.Params.DepWait = 300 * time.Millisecond
		c.Params.Resync = 20 * time.Millisecond
	})
	n := nodes[0]
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	topic, id, key := attacker(t, n, false)
	send := func(seq int) *signalmesh.Signal {
		t.Helper()
		s := mustSignal(t, "edge.reading",
			signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
			signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", seq, seq)))
		wire := signedWire(t, n.Mesh(), key, s)
		if err := topic.Publish(ctx, wire); err != nil {
			t.Fatal(err)
		}
		return s
	}
	second := send(2)
	eventually(t, 10*time.Second, "the second delivered without the first", func() bool {
		st, err := n.Status(ctx)
		return err == nil && rec.count() == 1 && st.Dropped["dependency_not_found"] == 1 && st.Buffered == 0
	})
	third := send(3)
	eventually(t, 10*time.Second, "the third follows in order", func() bool { return rec.count() == 2 })
	first := send(1)
	eventually(t, 10*time.Second, "the first delivered late", func() bool {
		st, err := n.Status(ctx)
		return err == nil && rec.count() == 3 && st.Dropped["delivered_late"] == 1
	})
	got := rec.snapshot()
	for i, want := range []*signalmesh.Signal{second, third, first} {
		if got[i].ID != want.ID {
			t.Fatalf("delivery %d: %s, want %s", i, got[i].ID, want.ID)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// Every gossiped signal, Weak ones included, carries its origin's
// signature over its content and stamp (meshsig): one without, one signed
// by another key, and one changed after signing are rejected and counted;
// the signed one is delivered.
func TestUnsignedGossipIsRejectedAndCounted(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	other, _, _ := crypto.GenerateEd25519Key(nil)
	mk := func(id peer.ID, typ string, seq int) *signalmesh.Signal {
		opts := []signalmesh.Option{signalmesh.WithExtension(signalmesh.ExtPeer, id.String())}
		if seq > 0 {
			opts = append(opts, signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", seq, seq)))
		}
		return mustSignal(t, typ, opts...)
	}
	// One attacker per message: the first rejected message of a peer
	// graylists it (peer scoring), and GossipSub ignores the rest unread.
	bad := []func(id peer.ID, key crypto.PrivKey) []byte{
		func(id peer.ID, _ crypto.PrivKey) []byte { w, _ := mk(id, "bad.unsigned", 1).MarshalBinary(); return w },
		func(id peer.ID, _ crypto.PrivKey) []byte { w, _ := mk(id, "bad.weak", 0).MarshalBinary(); return w },
		func(id peer.ID, _ crypto.PrivKey) []byte {
			return signedWire(t, n.Mesh(), other, mk(id, "bad.otherkey", 1))
		},
		func(id peer.ID, key crypto.PrivKey) []byte {
			changed := mk(id, "bad.changed", 1)
			signedWire(t, n.Mesh(), key, changed)
			changed.Data = []byte(`"changed"`)
			w, _ := changed.MarshalBinary()
			return w
		},
		func(id peer.ID, key crypto.PrivKey) []byte {
			return signedWire(t, "another-mesh", key, mk(id, "bad.othermesh", 1))
		},
	}
	for _, b := range bad {
		topic, id, key := attacker(t, n, false)
		if err := topic.Publish(ctx, b(id, key)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every unsigned signal counted", func() bool {
		st, err := n.Status(ctx)
		return err == nil && st.Rejected["signature"] == 5
	})
	topic, id, key := attacker(t, n, false)
	good := mk(id, "good.signed", 1)
	if err := topic.Publish(ctx, signedWire(t, n.Mesh(), key, good)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the signed signal delivered", func() bool { return rec.count() >= 1 })
	if got := rec.snapshot(); len(got) != 1 || got[0].ID != good.ID {
		t.Fatalf("handler saw %v", got)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A peer flooding signals that never become ready (their first sequence
// never comes) holds at most OriginBuffer of the causal buffer; another
// origin's signals that arrive out of order still get in and are
// delivered once their first arrives. Without the per-origin bound
// (OriginBuffer -1, as before it), the flood fills the whole buffer and
// the other origin's early arrivals are refused: gossip-only, they never
// come back.
func TestFloodOfNeverReadySignalsCannotKeepOthersOut(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	const buffer, flood = 4000, 20000
	nodes := cluster(t, 1, func(_ int, c *node.Config) {
		c.Params.CausalBuffer = buffer
		c.Params.Resync = 50 * time.Millisecond
	})
	n := nodes[0]
	rec := newRecorder()
	if _, err := n.Subscribe("honest.*", rec.handle); err != nil {
		t.Fatal(err)
	}
	stamped := func(typ string, id peer.ID, seq int) *signalmesh.Signal {
		return mustSignal(t, typ, signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
			signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", seq, seq)))
	}
	flooder, fid, fkey := attacker(t, n, false)
	floods := make([]*signalmesh.Signal, 0, flood)
	for k := 2; k <= flood+1; k++ { // sequence 1 never comes
		floods = append(floods, stamped("flood.never", fid, k))
	}
	if err := node.SignBatch(n.Mesh(), fkey, floods); err != nil { // signed: the flooder is a member
		t.Fatal(err)
	}
	for _, s := range floods {
		wire, _ := s.MarshalBinary()
		if err := flooder.Publish(ctx, wire); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "the flood is in, up to the origin's share", func() bool {
		st, err := n.Status(ctx)
		return err == nil && st.Buffered == buffer/4 && st.Dropped["causal_buffer_full"] > 0
	})
	honest, hid, hkey := attacker(t, n, false)
	for _, seq := range []int{5, 4, 3, 2, 1} { // out of order, gossip only
		if err := honest.Publish(ctx, signedWire(t, n.Mesh(), hkey, stamped("honest.reading", hid, seq))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the other origin's signals, all of them", func() bool { return rec.count() == 5 })
	for i, s := range rec.snapshot() {
		if _, seq := journal.Place(s); seq != uint64(i+1) {
			t.Fatalf("delivery %d has sequence %d", i, seq)
		}
	}
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Buffered > buffer/4 {
		t.Fatalf("%d signals wait, more than the flooder's share %d", st.Buffered, buffer/4)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// GossipSub peer scoring is on: a peer whose message a validator rejects
// is graylisted (its next messages are ignored unread, its score shown in
// Status.Links), and recovers as the count decays.
func TestRejectedSenderIsGraylistedThenRecovers(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	topic, id, _ := attacker(t, n, false)
	// A signal in its own name that it did not sign: no honest peer passes
	// one on (an undecodable message costs nothing: a newer relay may pass
	// on what this node cannot decode).
	forged, _ := mustSignal(t, "order.created", signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "1/1/")).MarshalBinary()
	if err := topic.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	score := func() (float64, int) {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range st.Links {
			if l.Peer == id.String() {
				return l.Score, st.Graylisted
			}
		}
		return 0, st.Graylisted
	}
	eventually(t, 10*time.Second, "the sender graylisted", func() bool {
		s, g := score()
		return s < -80 && g == 1
	})
	eventually(t, 30*time.Second, "the sender's score recovered", func() bool {
		s, g := score()
		return s > -80 && g == 0
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A message cannot claim an honest message's GossipSub id before it exists:
// messages are named by a hash of their content. When a single signal was
// named by its signal id, an undecodable message carrying that id made the
// victim drop the real signal as already seen (GossipSub marks a message
// seen before its validators run), at no cost to the sender.
func TestUndecodableCopyCannotPreemptASignal(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	publisher, victim := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := victim.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	x := mustSignal(t, "order.created", signalmesh.WithID("victim-1"))
	w, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	garbage, _, _ := attacker(t, victim, false)
	if err := garbage.Publish(ctx, w[:len(w)-5]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the garbage refused", func() bool {
		st, err := victim.Status(ctx)
		return err == nil && st.Rejected["decode"] == 1
	})
	// Weak: gossip only, so the journal cannot make up for a dropped message.
	if err := publisher.PublishWith(ctx, node.Weak, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the real signal delivered", func() bool { return rec.count() == 1 })
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A signal whose proof is of a version this node does not know is refused
// ("signature_version") without lowering the score of the peer that handed
// it over: a relay of a newer version may know it.
func TestUnknownProofVersionIsNotPenalised(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	topic, id, key := attacker(t, n, false)
	s := mustSignal(t, "order.created", signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "1/1/"))
	if err := node.Sign(n.Mesh(), key, s); err != nil {
		t.Fatal(err)
	}
	b, err := base64.RawURLEncoding.DecodeString(s.Extensions[signalmesh.ExtSig].(string))
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 99
	s.Extensions[signalmesh.ExtSig] = base64.RawURLEncoding.EncodeToString(b)
	w, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, w); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the unknown version refused", func() bool {
		st, err := n.Status(ctx)
		return err == nil && st.Rejected["signature_version"] == 1
	})
	// Scores are refreshed every second: watch two refreshes.
	for end := time.Now().Add(2200 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range st.Links {
			if l.Peer == id.String() && l.Score < 0 {
				t.Fatalf("the relay of an unknown proof version scores %.1f", l.Score)
			}
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// GossipSub's gossip (IHAVE) on the signals topic from a peer connected a
// moment ago is left out once the node has a mesh on the topic (it names
// frames published before the two were connected: the journal brings
// them), and counted; gossip on another topic in the same RPC is not.
// This checks the inspector is GossipSub's: the RPC comes on a raw stream.
func TestGossipFromANewPeerIsLeftOut(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	n := nodes[0]
	eventually(t, 10*time.Second, "a mesh on the signals topic", func() bool {
		s, err := n.Status(ctx)
		return err == nil && s.Mesh > 0
	})
	_, send := rawGossip(t, n)
	signals, journal := "/signalmesh/"+n.Mesh()+"/signals", "/signalmesh/"+n.Mesh()+"/journal"
	rpc := &pb.RPC{Control: &pb.ControlMessage{Ihave: []*pb.ControlIHave{
		{TopicID: &signals, MessageIDs: []string{"frame-1", "frame-2"}},
		{TopicID: &journal, MessageIDs: []string{"heads-1"}},
	}}}
	send(rpc)
	eventually(t, 10*time.Second, "the signals gossip left out", func() bool {
		s, err := n.Status(ctx)
		return err == nil && s.GossipLeft == 2
	})
}

// rawGossip connects a bare libp2p host (no GossipSub of its own) to n and
// opens a GossipSub stream to it; send writes one RPC on it.
func rawGossip(t *testing.T, n *peerNode) (h host.Host, send func(*pb.RPC)) {
	t.Helper()
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if err := h.Connect(ctx, n.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	st, err := h.NewStream(ctx, n.ID(), "/meshsub/1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return h, func(rpc *pb.RPC) {
		b, err := proto.Marshal(rpc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...)); err != nil {
			t.Fatal(err)
		}
	}
}
