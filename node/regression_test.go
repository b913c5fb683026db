package node_test

// Regression tests from a review of the causal core: each comment tells
// the failure the test caught before its fix.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/node"
)

// Status.Clock names origins by peer id; the backlog compares cursors by
// peer ref. A cursor taken from Status.Clock covers nothing.
func TestStartAfterTakesStatusClock(t *testing.T) {
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	for i := 0; i < 3; i++ {
		if err := n.Publish(ctx, mustSignal(t, "feed.x")); err != nil {
			t.Fatal(err)
		}
	}
	var st node.Status
	eventually(t, 10*time.Second, "3 delivered and journaled", func() bool {
		st, _ = n.Status(ctx)
		c, _, _ := n.JournalDigest(ctx)
		return c == 3 && st.Clock.Get(n.ID().String()) == 3
	})
	rec := newRecorder()
	if _, err := n.Subscribe("feed.**", rec.handle, node.WithStart(node.StartAfter(st.Clock))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if rec.count() != 0 {
		t.Fatalf("StartAfter(Status().Clock) replayed %d signals the cursor covers (clock %v)", rec.count(), st.Clock)
	}
}

// After a restart, publishing an identity journaled before it is not
// idempotent (a second copy gets a new sequence number) and other content
// is not refused with ErrConflict: the committer's Bloom filter of
// journaled ids (n.seen) is only filled by the put hook, not at restore.
func restartWithX(t *testing.T) (*node.Node, *signalmesh.Signal) {
	ctx := context.Background()
	dir := t.TempDir()
	mesh := "review-" + time.Now().Format("150405.000000")
	cfg := node.Config{Mesh: mesh, DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	n, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := mustSignal(t, "feed.x")
	if err := n.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "x journaled", func() bool { c, _, _ := n.JournalDigest(ctx); return c == 1 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, x
}

func TestRetryAfterRestartIsIdempotent(t *testing.T) {
	ctx := context.Background()
	n, x := restartWithX(t)
	if err := n.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if c, _, _ := n.JournalDigest(ctx); c != 1 {
		t.Fatalf("after restart, an identical retry on the same peer was stamped again: journal holds %d signals, want 1", c)
	}
}

func TestConflictAfterRestartIsRefused(t *testing.T) {
	ctx := context.Background()
	n, x := restartWithX(t)
	y := x.Clone()
	y.Data = []byte(`{"other":true}`)
	y.DataContentType = "application/json"
	if err := n.Publish(ctx, y); !errors.Is(err, node.ErrConflict) {
		t.Fatalf("after restart, other content under a journaled (source, id): %v, want ErrConflict", err)
	}
}

// One gossiped signal with Lamport time 2^64-1 (a valid stamp: seq 1, no
// dependencies, so it is ready and delivered) made every peer that
// delivered it stamp its next signal with Lamport max+1 = 0, which
// ParseStamp refuses: the publisher's own signals were rejected locally,
// could not be journaled, and every later signal of that origin waited
// forever. The core now bounds a Lamport time by what the signal's
// predecessor and dependencies allow (counted as rejected "lamport").
func TestHostileLamportDoesNotStopPublishing(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	victim, other := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := other.Subscribe("feed.**", rec.handle); err != nil {
		t.Fatal(err)
	}
	self := newRecorder()
	if _, err := victim.Subscribe("feed.**", self.handle); err != nil {
		t.Fatal(err)
	}
	// The bomb is gossip only: it reaches both peers directly.
	priv, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPublicKey(pub)
	bomb := mustSignal(t, "feed.bomb",
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "1/18446744073709551615/"))
	wire := signedWire(t, victim.Mesh(), priv, bomb)
	for _, target := range nodes {
		topic, _, _ := attacker(t, target, false)
		if err := topic.Publish(ctx, wire); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the bomb delivered on both peers", func() bool { return self.count() == 1 && rec.count() == 1 })
	x := mustSignal(t, "feed.x")
	if err := victim.Publish(ctx, x); err != nil {
		t.Fatalf("publish after the bomb: %v", err)
	}
	eventually(t, 10*time.Second, "the victim's next signal delivered on both peers", func() bool {
		return self.count() == 2 && rec.count() == 2
	})
	st, _ := victim.Status(ctx)
	if st.Rejected["lamport"] != 1 {
		t.Fatalf("rejected %v, want the hostile Lamport time counted once", st.Rejected)
	}
	got := rec.snapshot()[1]
	if stamp := got.Extensions[signalmesh.ExtCausal].(string); stamp != "1/2/" && !strings.HasPrefix(stamp, "1/2/") {
		t.Fatalf("the victim's stamp %q, want Lamport 2 (the bomb counted as 1)", stamp)
	}
}

// A Weak signal is gossip only and anyone may send one with any id: it
// does not satisfy a causeid (before, one released an Eventual effect ahead
// of its real cause).
func TestWeakSignalIsNotACause(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	n, other := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := n.Subscribe("order.**", rec.handle); err != nil {
		t.Fatal(err)
	}
	weak := newRecorder()
	if _, err := n.Subscribe("spam.**", weak.handle); err != nil {
		t.Fatal(err)
	}
	// The effect names a cause learned out of band: it waits for it.
	effect := mustSignal(t, "order.effect", signalmesh.WithCauseID("cause-1"))
	if err := n.Publish(ctx, effect); err != nil {
		t.Fatal(err)
	}
	topic, id, key := attacker(t, n, false)
	forged, err := signalmesh.New("spam.ping", "/attacker", nil, signalmesh.WithID("cause-1"),
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()))
	if err != nil {
		t.Fatal(err)
	}
	wire := signedWire(t, n.Mesh(), key, forged)
	if err := topic.Publish(ctx, wire); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the weak signal delivered", func() bool { return weak.count() == 1 })
	// The loop handled the weak signal (it dispatched it): had it released
	// the effect, the effect would no longer wait.
	if st, err := n.Status(ctx); err != nil || st.Buffered != 1 || len(st.MissingCauses) != 1 {
		t.Fatalf("after the weak signal: buffered %d, missing causes %v (%v); want the effect still waiting for cause-1", st.Buffered, st.MissingCauses, err)
	}
	cause, _ := signalmesh.New("order.cause", "/client", nil, signalmesh.WithID("cause-1"))
	if err := other.Publish(ctx, cause); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both delivered", func() bool { return rec.count() == 2 })
	if got := rec.snapshot(); got[0].ID != "cause-1" {
		t.Fatalf("effect delivered before its cause: order %s, %s", got[0].Type, got[1].Type)
	}
}

// After the Lamport bomb, the signal the victim published sits in the
// outbox (journal writes fail); readOutbox cannot Place it (ParseStamp
// refuses Lamport 0) and New refuses to start: the peer is down for good.
func TestRestartAfterHostileLamport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 1, func(_ int, c *node.Config) { c.DataDir = dir })
	victim := nodes[0]
	self := newRecorder()
	if _, err := victim.Subscribe("feed.**", self.handle); err != nil {
		t.Fatal(err)
	}
	topic, id, key := attacker(t, victim, false)
	bomb := mustSignal(t, "feed.bomb",
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, "1/18446744073709551615/"))
	wire := signedWire(t, victim.Mesh(), key, bomb)
	if err := topic.Publish(ctx, wire); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the bomb delivered", func() bool { return self.count() == 1 })
	if err := victim.Publish(ctx, mustSignal(t, "feed.x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := victim.Close(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("the victim cannot restart (New panicked on its error): %v", p)
		}
	}()
	n, err := node.New(ctx, node.Config{Mesh: victim.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("the victim cannot restart: %v", err)
	}
	n.Close()
}

// One identity published on two cut-off peers (an idempotent retry) is two
// places. A named subscription handles the copy its node delivered first
// and its cursor covers that place only; reopened, its backlog (Replay,
// which keeps the first copy in replay order) hands it the other copy: the
// same signal twice.
func TestNamedCursorCoversRetryCopy(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	// The subscriber is the peer with the larger ref: the other's copy
	// comes first in replay order (same Lamport time 1, ties by ref).
	s, o := nodes[0], nodes[1]
	if causal.PeerRef(s.ID().String()) < causal.PeerRef(o.ID().String()) {
		s, o = o, s
	}
	rec := newRecorder()
	sub, err := s.Subscribe("feed.**", rec.handle, node.WithName("audit"))
	if err != nil {
		t.Fatal(err)
	}
	cut([]*peerNode{s}, []*peerNode{o})
	x := mustSignal(t, "feed.x")
	if err := s.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := o.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	heal(t, nodes)
	journalsConverge(t, nodes, 2, 20*time.Second)
	eventually(t, 10*time.Second, "both copies delivered on the subscriber", func() bool {
		st, _ := s.Status(ctx)
		return st.Clock.Get(o.ID().String()) == 1 && st.Clock.Get(s.ID().String()) == 1
	})
	time.Sleep(300 * time.Millisecond)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if rec.count() != 1 {
		t.Fatalf("live: %d deliveries of one identity, want 1", rec.count())
	}
	sub, err = s.Subscribe("feed.**", rec.handle, node.WithName("audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	time.Sleep(time.Second)
	if rec.count() != 1 {
		t.Fatalf("named subscription reopened: the one identity handled %d times, want 1", rec.count())
	}
}

// Every error return after New's deferred cleanup is set up ("return nil,
// err") sets the named result n to nil before the defer runs n.Close():
// New panics with a nil dereference instead of returning the error. Here:
// a second node on a DataDir already open (pebble's lock).
func TestNewReturnsErrorOnDataDirInUse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := node.Config{Mesh: "review-lock", DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	a, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("New on a DataDir in use panicked instead of returning an error: %v", p)
		}
	}()
	if b, err := node.New(ctx, cfg); err == nil {
		b.Close()
		t.Fatal("two nodes on one DataDir")
	}
}

// The loop dispatches a release batch signal by signal and publishes the
// new stamp base (publishBase) only after the whole batch. A handler that
// publishes in reaction to an early signal of the batch races the loop:
// the committer stamps its signal with the old base, so the effect does
// not depend on the signal the handler just saw, and other replicas may
// deliver it first.
func TestHandlerPublishNamesWhatItSaw(t *testing.T) {
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	var effectID atomic.Value
	_, err := n.Subscribe("trigger.**", func(ctx context.Context, s *signalmesh.Signal) error {
		e := mustSignal(t, "effect.e")
		if err := n.Publish(ctx, e); err != nil {
			return err
		}
		effectID.Store(e.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	topic, id, key := attacker(t, n, false)
	const N = 6000
	mk := func(seq int, typ string) *signalmesh.Signal {
		s := mustSignal(t, typ, signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
			signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", seq, seq)))
		if err := node.Sign(n.Mesh(), key, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var batch []*signalmesh.Signal
	for seq := 2; seq <= N; seq++ {
		batch = append(batch, mk(seq, "bulk.x"))
		if len(batch) == 2000 {
			if err := topic.Publish(ctx, frameOf(t, batch)); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	if len(batch) > 0 {
		if err := topic.Publish(ctx, frameOf(t, batch)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "bulk waiting", func() bool { st, _ := n.Status(ctx); return st.Buffered == N-1 })
	w1, _ := mk(1, "trigger.t").MarshalBinary()
	if err := topic.Publish(ctx, w1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "effect published", func() bool { return effectID.Load() != nil })
	var e *signalmesh.Signal
	eventually(t, 10*time.Second, "effect journaled", func() bool {
		e, err = n.Get(ctx, effectID.Load().(string))
		return err == nil
	})
	st, err := causal.ParseStamp(e.Extensions[signalmesh.ExtCausal].(string))
	if err != nil {
		t.Fatal(err)
	}
	ref := causal.PeerRef(id.String())
	for _, d := range st.Deps {
		if d.Origin == ref && d.Seq >= 1 {
			return
		}
	}
	t.Fatalf("the effect of trigger %s:1, published by its handler, is stamped %q: no dependency on the trigger's origin", ref, e.Extensions[signalmesh.ExtCausal])
}

// The loop pulls only while the buffer holds signals or right after a
// refusal (pullWanted, consumed by the next tick). A signal refused with
// ErrFull whose predecessor is still waiting is not pulled by that tick
// (Pull skips an origin whose next signal waits); when the predecessor is
// released later and the buffer empties, nothing pulls again: the refused
// signal stays undelivered until its origin publishes another one.
func TestRefusedSignalIsPulledAfterBufferEmpties(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 1 {
			c.Params.CausalBuffer = 1
			c.Params.Resync = 50 * time.Millisecond
		}
	})
	a, v := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := v.Subscribe("feed.**", rec.handle); err != nil {
		t.Fatal(err)
	}
	// A:1 waits everywhere for an out-of-band cause.
	a1 := mustSignal(t, "feed.effect", signalmesh.WithCauseID("cause-c"))
	if err := a.Publish(ctx, a1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "A:1 waiting on v", func() bool { st, _ := v.Status(ctx); return st.Buffered == 1 })
	a2 := mustSignal(t, "feed.next")
	if err := a.Publish(ctx, a2); err != nil {
		t.Fatal(err)
	}
	// A:2 arrives by gossip and by the journal while the buffer is full.
	eventually(t, 10*time.Second, "A:2 journaled on v", func() bool { c, _, _ := v.JournalDigest(ctx); return c == 2 })
	time.Sleep(time.Second)
	cause, _ := signalmesh.New("feed.cause", "/client", nil, signalmesh.WithID("cause-c"))
	if err := v.Publish(ctx, cause); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	st, _ := v.Status(ctx)
	if rec.seen[a2.ID] != 1 {
		t.Fatalf("A:2 never delivered on v after its predecessor was: handled %d signals, buffered %d, missing %v, dropped %v",
			rec.count(), st.Buffered, st.Missing, st.Dropped)
	}
}

func frameOf(t *testing.T, sigs []*signalmesh.Signal) []byte {
	b := []byte{0xF1}
	b = binary.AppendUvarint(b, uint64(len(sigs)))
	for _, s := range sigs {
		w, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b = binary.AppendUvarint(b, uint64(len(w)))
		b = append(b, w...)
	}
	return b
}

// A named subscription whose handler is slower than the stream, with a
// small queue, handles every signal once and in order (before, past its
// queue it dropped them and its cursor moved past them: 131 of 3,000 with a
// 0.3 ms handler and a queue of 64); closed while behind and reopened, it
// gets the rest, none twice.
func TestSlowNamedSubscriptionLosesNothing(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	var mu sync.Mutex
	var got []string
	seen := map[string]int{}
	h := func(_ context.Context, s *signalmesh.Signal) error {
		time.Sleep(300 * time.Microsecond) // the slow consumer under test
		mu.Lock()
		got = append(got, s.ID)
		seen[s.ID]++
		mu.Unlock()
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	sub, err := n.Subscribe("feed.**", h, node.WithName("slow"), node.WithMaxInFlight(64))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for b := 0; b < 30; b++ {
		batch := make([]*signalmesh.Signal, 100)
		for i := range batch {
			batch[i] = mustSignal(t, "feed.item")
			want = append(want, batch[i].ID)
		}
		if err := n.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the subscription falls behind", func() bool { return count() > 100 })
	if err := sub.Close(); err != nil { // behind: most of the stream is still to come
		t.Fatal(err)
	}
	handledBefore := count()
	eventually(t, 10*time.Second, "everything journaled", func() bool { c, _, _ := n.JournalDigest(ctx); return c == len(want) })
	if sub, err = n.Subscribe("feed.**", h, node.WithName("slow"), node.WithMaxInFlight(64)); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	eventually(t, 30*time.Second, "every signal handled", func() bool { return count() >= len(want) })
	mu.Lock()
	defer mu.Unlock()
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("%s handled %d times", id, k)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("handled %d, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delivery %d is %s, want %s (published order: one publisher, one causal chain)", i, got[i], want[i])
		}
	}
	st, _ := n.Status(ctx)
	if st.Dropped["subscriber_overflow"] != 0 {
		t.Fatalf("dropped %v", st.Dropped)
	}
	t.Logf("handled %d before closing, %d after reopening", handledBefore, len(want)-handledBefore)
}

// A signal delivered (published here, or received by gossip) but not yet
// in this replica's journal is in the backlog of a subscription opened in
// that window (before, it was neither in the backlog nor dispatched live:
// a named subscription reopened after a restart missed what gossip brought
// between the start and the Subscribe).
func TestBacklogHoldsDeliveredButUnjournaled(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 1, func(_ int, c *node.Config) {
		c.Params.JournalDelay = time.Hour // x stays in the outbox
		c.Params.JournalBatch = 1 << 20
	})
	n := nodes[0]
	live := newRecorder()
	if _, err := n.Subscribe("feed.**", live.handle); err != nil {
		t.Fatal(err)
	}
	x := mustSignal(t, "feed.x")
	if err := n.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "x delivered live", func() bool { return live.count() == 1 })
	late := newRecorder()
	if _, err := n.Subscribe("feed.**", late.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "x in the late subscription's backlog", func() bool { return late.count() == 1 })
	if c, _, _ := n.JournalDigest(ctx); c != 0 {
		t.Fatalf("x reached the journal (%d entries): the test no longer tries the window", c)
	}
}

// An edge peer publishes, a hub delivers its signal by gossip, and the edge
// peer leaves before any replica fetched its journal delta: the hub adopts
// the signal (journals it itself), so a peer that joins later still gets
// it. Before, the signal existed only in the departed peer's journal.
func TestGossipedSignalOutlivesItsOrigin(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 0 {
			c.Params.JournalDelay = time.Hour // the edge peer's delta never leaves it
		} else {
			c.Params.Adopt = 200 * time.Millisecond
		}
	})
	edge, hub := nodes[0], nodes[1]
	got := newRecorder()
	if _, err := hub.Subscribe("edge.**", got.handle); err != nil {
		t.Fatal(err)
	}
	warm := newRecorder() // the edge's gossip reaches the hub once its GossipSub knows it
	if _, err := hub.Subscribe("warmup", warm.handle); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "gossip from the edge reaches the hub", func() bool {
		_ = edge.PublishWith(ctx, node.Weak, mustSignal(t, "warmup"))
		return warm.count() > 0
	})
	x := mustSignal(t, "edge.reading")
	if err := edge.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the hub delivers the reading", func() bool { return got.count() == 1 })
	if err := edge.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the hub journals the reading", func() bool {
		c, _, err := hub.JournalDigest(ctx)
		return err == nil && c == 1
	})
	rec := joinLate(t, hub.Node, "edge.**")
	eventually(t, 20*time.Second, "a peer that joins later gets the reading", func() bool { return rec.count() == 1 })
}

// A handler reads what it was handed, and its causes and effects, at once:
// on the publishing peer (the signals wait in the outbox) and on a peer
// that got them by gossip (their journal delta has not come). Before, Get,
// Causes, Effects and Trace answered not-found until the journal batch
// landed.
func TestReadWhatYouDelivered(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		c.Params.JournalDelay = time.Hour // nothing reaches the journal while the test reads
		c.Params.JournalBatch = 1 << 20
	})
	warm := newRecorder()
	if _, err := nodes[1].Subscribe("warmup", warm.handle); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "gossip reaches node 1", func() bool {
		_ = nodes[0].PublishWith(ctx, node.Weak, mustSignal(t, "warmup"))
		return warm.count() > 0
	})
	cause := mustSignal(t, "order.placed")
	effect := mustSignal(t, "order.paid", signalmesh.WithCause(cause))
	type result struct {
		node int
		err  error
	}
	results := make(chan result, 4)
	for i, n := range nodes {
		check := func(_ context.Context, s *signalmesh.Signal) error {
			var err error
			switch s.ID {
			case cause.ID:
				_, err = n.Get(ctx, s.ID)
			case effect.ID:
				var chain, effects, tree []*signalmesh.Signal
				if chain, err = n.Causes(ctx, s.ID); err == nil && (len(chain) != 2 || chain[0].ID != cause.ID) {
					err = fmt.Errorf("causes of the effect: %d signals", len(chain))
				}
				if effects, err = n.Effects(ctx, cause.ID); err == nil && (len(effects) != 1 || effects[0].ID != effect.ID) {
					err = fmt.Errorf("effects of the cause: %d signals", len(effects))
				}
				if _, tree, err = n.Trace(ctx, cause.ID); err == nil && len(tree) != 1 {
					err = fmt.Errorf("trace of the cause: %d effects", len(tree))
				}
			}
			results <- result{i, err}
			return nil
		}
		if _, err := n.Subscribe("order.**", check); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[0].Publish(ctx, cause, effect); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if r := <-results; r.err != nil {
			t.Errorf("node %d: %v", r.node, r.err)
		}
	}
	if c, _, _ := nodes[1].JournalDigest(ctx); c != 0 {
		t.Fatalf("the signals reached the journal (%d entries): the test no longer tries the window", c)
	}
}

// A signal that is valid as given but not once the node adds its own
// extensions fails its own publish only, never the publishes committed in
// the same batch.
func TestOneBadSignalFailsOnlyItsOwnPublish(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n := cluster(t, 1, func(_ int, c *node.Config) { c.Params.MaxBatchDelay = 300 * time.Millisecond })[0]
	bad := mustSignal(t, "a.bad")
	bad.Extensions = map[string]any{}
	for i := range signalmesh.DefaultLimits().MaxExtensions - 1 { // room for one more, not for the node's two
		bad.Extensions[fmt.Sprintf("x%d", i)] = "v"
	}
	if err := bad.Validate(); err != nil {
		t.Fatalf("the test's signal is invalid as given: %v", err)
	}
	good := make(chan error, 1)
	go func() { good <- n.Publish(ctx, mustSignal(t, "a.good")) }()
	if err := n.Publish(ctx, bad); !errors.Is(err, signalmesh.ErrTooLarge) {
		t.Fatalf("publish of a signal with too many extensions once stamped: %v", err)
	}
	if err := <-good; err != nil {
		t.Fatalf("a good signal's publish failed with a bad one's: %v", err)
	}
}

// A named subscription handles an event's first copy (by gossip, never
// journaled on its node), its node restarts, and the client's retry of the
// event on another peer arrives as a second copy: it is not handed over
// again. Before, the cursor covered the first copy's place only, which the
// restarted node did not know.
func TestNamedSubscriptionSkipsRetryCopyAfterRestart(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 0 {
			c.Params.JournalDelay = time.Hour // the first copy never leaves x by the journal
		} else {
			c.DataDir = dir
			c.Params.Adopt = -1 // and b does not journal it itself
		}
	})
	x, b := nodes[0], nodes[1]
	first := newRecorder()
	if _, err := b.Subscribe("order.**", first.handle, node.WithName("billing")); err != nil {
		t.Fatal(err)
	}
	warm := newRecorder()
	if _, err := b.Subscribe("warmup", warm.handle); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "x's gossip reaches b", func() bool {
		_ = x.PublishWith(ctx, node.Weak, mustSignal(t, "warmup"))
		return warm.count() > 0
	})
	c := mustSignal(t, "order.placed")
	if err := x.Publish(ctx, c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b handles the first copy", func() bool { return first.count() == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The client did not learn that x published it, and retries on y, a
	// peer that never saw the first copy; b restarts and meets y.
	start := func(cfg node.Config) *node.Node {
		cfg.Mesh, cfg.ListenAddrs, cfg.Logger = b.Mesh(), []string{"/ip4/127.0.0.1/tcp/0"}, testLogger(t)
		n, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	y := start(node.Config{})
	b2 := start(node.Config{DataDir: dir, Params: node.Params{Adopt: -1}})
	again := newRecorder()
	if _, err := b2.Subscribe("order.**", again.handle, node.WithName("billing")); err != nil {
		t.Fatal(err)
	}
	if err := b2.Connect(ctx, y.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	mark := mustSignal(t, "order.marker")
	if err := y.Publish(ctx, c, mark); err != nil { // the retry, then a marker
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "b handles the marker", func() bool { return again.count() >= 1 })
	for _, s := range again.snapshot() {
		if s.ID == c.ID {
			t.Fatalf("the retried event was handed over again after the restart")
		}
	}
}

// A node delivers a signal by gossip, its origin leaves without anyone
// having fetched it, and the node is killed before it adopts it: at its
// next start it journals the signal first thing (it was kept on disk
// before any handler saw it), so the signal a handler saw is not lost.
func TestDeliveredSignalSurvivesKill(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 0 {
			c.Params.JournalDelay = time.Hour // the origin's delta never leaves it
			c.Params.HandOff = -1
		} else {
			c.DataDir = dir
			c.Params.Adopt = time.Hour // no adoption before the kill
		}
	})
	edge, b := nodes[0], nodes[1]
	got := newRecorder()
	if _, err := b.Subscribe("edge.**", got.handle); err != nil {
		t.Fatal(err)
	}
	warm := newRecorder()
	if _, err := b.Subscribe("warmup", warm.handle); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge's gossip reaches b", func() bool {
		_ = edge.PublishWith(ctx, node.Weak, mustSignal(t, "warmup"))
		return warm.count() > 0
	})
	x := mustSignal(t, "edge.reading")
	if err := edge.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b delivers the reading", func() bool { return got.count() == 1 })
	if err := edge.Close(); err != nil {
		t.Fatal(err)
	}
	node.SetTestCrashClose(true)
	err := b.Close()
	node.SetTestCrashClose(false)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := node.New(ctx, node.Config{Mesh: b.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	eventually(t, 10*time.Second, "the restarted node journals the reading", func() bool {
		_, err := b2.Get(ctx, x.ID)
		c, _, _ := b2.JournalDigest(ctx)
		return err == nil && c == 1
	})
}

// A subscription from the beginning opened while the journal batch of a
// delivered signal is announced but not committed (go-ds-crdt calls the
// put hook before it commits; an instrumented store holds the commit
// 150 ms) still gets the signal. Before, it was in neither the journal nor
// the delivered-not-journaled set then, and already delivered: lost for
// that subscription (the Watermill suite lost 20 of 50 in CI).
func TestSubscribeWhileJournalCommitPending(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	node.SetTestWrapStore(func(b ds.Batching) ds.Batching {
		return &slowCommitStore{Batching: b, committed: map[string]bool{}, durable: map[string]bool{}}
	})
	t.Cleanup(func() { node.SetTestWrapStore(nil) })
	n := cluster(t, 1, nil)[0]
	x := mustSignal(t, "feed.x")
	if err := n.Publish(ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the journal entry announced", func() bool { return n.Arrived() >= 1 })
	if c, _, _ := n.JournalDigest(ctx); c != 0 {
		t.Fatalf("the batch is committed already (%d entries): the test no longer tries the window", c)
	}
	late := newRecorder()
	if _, err := n.Subscribe("feed.**", late.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "x in the late subscription", func() bool { return late.count() == 1 })
}

// A Weak signal a named subscription handled is not handed over again when
// the same event is gossiped again after the node stopped without a
// checkpoint (as after a kill -9): its cursor-log line records it (fault
// harness seeds 6012, 6034: a Weak signal handled twice across a restart).
func TestNamedSubscriptionRemembersWeakSignalsAcrossRestart(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 1 {
			c.DataDir = dir
		}
	})
	x, b := nodes[0], nodes[1]
	first := newRecorder()
	if _, err := b.Subscribe("weak.**", first.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	w := mustSignal(t, "weak.reading")
	eventually(t, 10*time.Second, "b handles the Weak signal", func() bool {
		_ = x.PublishWith(ctx, node.Weak, w, mustSignal(t, "other.warmup")) // gossip only: again, in a new frame, until it gets through
		return first.count() > 0
	})
	if err := b.Close(); err != nil { // no Subscription.Close: no checkpoint, only the log's lines
		t.Fatal(err)
	}
	b2, err := node.New(ctx, node.Config{Mesh: b.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	again := newRecorder()
	if _, err := b2.Subscribe("weak.**", again.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	if err := b2.Connect(ctx, x.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b handles a marker after the repeat", func() bool {
		_ = x.PublishWith(ctx, node.Weak, w, mustSignal(t, "weak.marker")) // a new frame each time
		return again.count() > 0
	})
	for _, s := range again.snapshot() {
		if s.ID == w.ID {
			t.Fatal("the Weak signal was handed over again after the restart")
		}
	}
}
