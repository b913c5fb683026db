package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

func TestQuorum(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 4, onDisk(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sigs := []*signalmesh.Signal{mustSignal(t, "payment.captured"), mustSignal(t, "payment.settled")}
	start := time.Now()
	if err := nodes[0].PublishWith(ctx, node.Quorum(3), sigs...); err != nil {
		t.Fatalf("Quorum(3) with 3 peers up: %v", err)
	}
	t.Logf("Quorum(3) of 2 signals acknowledged in %v", time.Since(start))
	for _, n := range nodes[1:] { // acknowledged means journaled there
		for _, s := range sigs {
			if _, err := n.Get(ctx, s.ID); err != nil {
				t.Fatalf("acknowledged but not journaled on %s: %v", n.ID(), err)
			}
		}
	}

	// Cut node 0 off from everyone: a quorum of 1 cannot be reached.
	for _, o := range nodes[1:] {
		nodes[0].gater.Block(o.ID())
		_ = nodes[0].Disconnect(o.ID())
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	lone := mustSignal(t, "payment.refunded")
	err := nodes[0].PublishWith(short, node.Quorum(1), lone)
	var qe *node.QuorumError
	if !errors.Is(err, node.ErrQuorum) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &qe) || qe.Want != 1 {
		t.Fatalf("Quorum(1) while cut off: %v", err)
	}
	if _, err := nodes[0].Get(context.Background(), lone.ID); err != nil {
		t.Fatalf("the signal of a failed quorum is not journaled: %v", err)
	}
	// It still converges once the cut heals.
	for _, n := range nodes {
		n.gater.Clear()
	}
	connectAll(t, nodes)
	journalsConverge(t, nodes, 3, 30*time.Second)
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A retry after a QuorumError (the usual reaction to a timeout) publishes
// nothing twice, and succeeds once a peer holds the signal: the waiting
// publisher asks the mesh for acks of the signal's journal place.
func TestQuorumRetryAfterTimeoutSucceedsOncePeerIsBack(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 3, onDisk(t))
	for _, o := range nodes[1:] { // both other peers away
		nodes[0].gater.Block(o.ID())
		_ = nodes[0].Disconnect(o.ID())
	}
	x := mustSignal(t, "order.placed")
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var qe *node.QuorumError
	if err := nodes[0].PublishWith(short, node.Quorum(2), x); !errors.As(err, &qe) || qe.Acked[x.ID] != 0 {
		t.Fatalf("Quorum(2) with no peer: %v", err)
	}
	nodes[0].gater.Clear()
	connectAll(t, nodes)
	ctx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := nodes[0].PublishWith(ctx, node.Quorum(2), x); err != nil {
		t.Fatalf("retry once the peers are back: %v", err)
	}
	for _, n := range nodes[1:] {
		if _, err := n.Get(ctx, x.ID); err != nil {
			t.Fatalf("acknowledged but not journaled on %s: %v", n.ID(), err)
		}
	}
	// A retry of an acknowledged signal is acknowledged again.
	if err := nodes[0].PublishWith(ctx, node.Quorum(2), x); err != nil {
		t.Fatalf("retry of an acknowledged signal: %v", err)
	}
	journalsConverge(t, nodes, 1, 30*time.Second)
}

// A retry on another peer (the client did not know whether its first try
// went through) waits for acks of the first copy, wherever it was
// published, and does not count the peer it is on.
func TestQuorumRetryOnAnotherPeer(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 3, onDisk(t))
	x := mustSignal(t, "order.placed")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].PublishWith(ctx, node.Quorum(2), x); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].PublishWith(ctx, node.Quorum(2), x); err != nil { // node 1 holds it: acks from 0 and 2
		t.Fatalf("retry on another peer: %v", err)
	}
	journalsConverge(t, nodes, 1, 30*time.Second)
}

// Two signals with one id (two sources) in one call, and the same signal
// in two concurrent calls: each waiter needs acks of its own signals.
func TestQuorumSameIDTwiceInOneCall(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, onDisk(t))
	a, err := signalmesh.New("order.placed", "/shop/a", nil, signalmesh.WithID("42"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := signalmesh.New("order.placed", "/shop/b", nil, signalmesh.WithID("42"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- nodes[0].PublishWith(ctx, node.Quorum(1), a, b, a) }()
	go func() { errs <- nodes[0].PublishWith(ctx, node.Quorum(1), b) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	sources := map[string]bool{}
	for s, err := range nodes[1].Replay(ctx, "order.placed") {
		if err != nil {
			t.Fatal(err)
		}
		sources[s.Source] = true
	}
	if !sources[a.Source] || !sources[b.Source] {
		t.Fatalf("both acknowledged, node 1 holds %v", sources)
	}
}

// An in-memory replica's journal is gone with its process: its ack is not
// counted by Quorum(k), only by QuorumInMemory(k). Once a peer on disk
// holds the signal, the same Quorum publish (a retry) succeeds.
func TestQuorumCountsOnlyDisk(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, nil) // both in memory
	x := mustSignal(t, "payment.captured")
	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	var qe *node.QuorumError
	if err := nodes[0].PublishWith(short, node.Quorum(1), x); !errors.As(err, &qe) || qe.Acked[x.ID] != 0 {
		t.Fatalf("Quorum(1) with only an in-memory peer: %v, want a QuorumError with no ack", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].PublishWith(ctx, node.QuorumInMemory(1), x); err != nil {
		t.Fatalf("QuorumInMemory(1) with an in-memory peer: %v", err)
	}
	disk, err := node.New(context.Background(), node.Config{Mesh: nodes[0].Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: testLogger(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = disk.Close() })
	if err := disk.Connect(ctx, nodes[0].AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].PublishWith(ctx, node.Quorum(1), x); err != nil {
		t.Fatalf("Quorum(1) once a peer on disk is connected: %v", err)
	}
	if got := node.Quorum(1).String() + " " + node.QuorumInMemory(2).String(); got != "quorum(1) quorum-in-memory(2)" {
		t.Fatalf("String: %s", got)
	}
}

// Acks count only from the allowlist: a peer outside it that reaches the
// acks topic through an allowed relay is rejected, not counted.
func TestQuorumCountsOnlyMembers(t *testing.T) {
	checkLeaks(t)
	mesh := fmt.Sprintf("test-%d", time.Now().UnixNano())
	start := func(allow []peer.ID) *node.Node {
		n, err := node.New(context.Background(), node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Allow: allow, Logger: testLogger(t),
			DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	relay, outsider := start(nil), start(nil)
	a := start([]peer.ID{relay.ID()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range [][2]*node.Node{{a, relay}, {outsider, relay}} {
		if err := c[0].Connect(ctx, c[1].AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	x := mustSignal(t, "order.placed")
	wait, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	res := make(chan error, 1)
	go func() { res <- a.PublishWith(wait, node.Quorum(2), x) }()
	eventually(t, 30*time.Second, "the outsider's ack rejected", func() bool {
		st, err := a.Status(ctx)
		return err == nil && st.Rejected["ack_not_member"] > 0
	})
	cancelWait()
	var qe *node.QuorumError
	if err := <-res; !errors.As(err, &qe) || qe.Acked[x.ID] != 1 {
		t.Fatalf("Quorum(2) with one member and one outsider: %v", err)
	}
}

// slowCommitStore is an instrumented store: it holds every batch that
// writes a journal entry for 150 ms before committing it (go-ds-crdt calls
// its put hook before it commits), and records which keys were committed
// and which of them a Sync made durable.
type slowCommitStore struct {
	ds.Batching
	mu        sync.Mutex
	committed map[string]bool
	durable   map[string]bool
}

func (s *slowCommitStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &slowBatch{Batch: b, s: s}, nil
}

func (s *slowCommitStore) Sync(ctx context.Context, prefix ds.Key) error {
	s.mu.Lock()
	done := maps.Clone(s.committed)
	s.mu.Unlock()
	if err := s.Batching.Sync(ctx, prefix); err != nil {
		return err
	}
	s.mu.Lock()
	maps.Copy(s.durable, done)
	s.mu.Unlock()
	return nil
}

func (s *slowCommitStore) isDurable(suffix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.durable {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

type slowBatch struct {
	ds.Batch
	s    *slowCommitStore
	keys []string
}

func (b *slowBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	b.keys = append(b.keys, k.String())
	return b.Batch.Put(ctx, k, v)
}

func (b *slowBatch) Commit(ctx context.Context) error {
	for _, k := range b.keys {
		if strings.Contains(k, "/journal/") && strings.HasSuffix(k, "/v") {
			time.Sleep(150 * time.Millisecond) // the window between put hook and commit, widened
			break
		}
	}
	if err := b.Batch.Commit(ctx); err != nil {
		return err
	}
	b.s.mu.Lock()
	for _, k := range b.keys {
		b.s.committed[k] = true
	}
	b.s.mu.Unlock()
	return nil
}

// A Quorum(k) publish returns only once k peers have the signal's journal
// entry committed and synced: the instrumented stores of the acking peers
// are read the moment PublishWith returns.
func TestQuorumAckFollowsSyncedCommit(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var stores []*slowCommitStore
	node.SetTestWrapStore(func(b ds.Batching) ds.Batching {
		s := &slowCommitStore{Batching: b, committed: map[string]bool{}, durable: map[string]bool{}}
		mu.Lock()
		stores = append(stores, s)
		mu.Unlock()
		return s
	})
	t.Cleanup(func() { node.SetTestWrapStore(nil) })
	nodes := cluster(t, 3, onDisk(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 5 {
		var sigs []*signalmesh.Signal
		for range 3 {
			sigs = append(sigs, mustSignal(t, "payment.captured"))
		}
		if err := nodes[0].PublishWith(ctx, node.Quorum(2), sigs...); err != nil {
			t.Fatal(err)
		}
		for i, s := range stores[1:] {
			for _, sig := range sigs {
				ref, seq := journal.Place(sig)
				if ref == "" {
					ref, seq = journalPlace(t, nodes[0].Node, sig.ID)
				}
				if key := "/k" + journal.SignalKey(ref, seq).String() + "/v"; !s.isDurable(key) {
					t.Fatalf("round %d: Quorum(2) returned before node %d synced the commit of %s", round, i+1, key)
				}
			}
		}
	}
}

// journalPlace is the place of a signal in n's journal.
func journalPlace(t *testing.T, n *node.Node, id string) (string, uint64) {
	t.Helper()
	s, err := n.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return journal.Place(s)
}

// The allow list holds on a signal's origin, not only on connections: an
// outsider's signal that an allowed peer relays (by gossip, or in its
// journal) is refused and counted, never delivered or journaled.
func TestAllowListHoldsOnRelayedSignals(t *testing.T) {
	checkLeaks(t)
	mesh := fmt.Sprintf("test-%d", time.Now().UnixNano())
	start := func(allow []peer.ID) *node.Node {
		// The relay's signal depends on the outsider's, which a never
		// takes: it is given up after DepWait.
		n, err := node.New(context.Background(), node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Allow: allow, Logger: testLogger(t),
			Params: node.Params{DepWait: 3 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	relay, outsider := start(nil), start(nil)
	a := start([]peer.ID{relay.ID()})
	recA, recRelay := newRecorder(), newRecorder()
	for _, s := range []struct {
		n *node.Node
		r *recorder
	}{{a, recA}, {relay, recRelay}} {
		if _, err := s.n.Subscribe("**", s.r.handle); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range [][2]*node.Node{{a, relay}, {outsider, relay}} {
		if err := c[0].Connect(ctx, c[1].AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	// The relay forwards gossip to the peers in its GossipSub mesh: once
	// both are in it, the outsider publishes. a ignores the outsider's
	// signal and head announcements (the relay, which has no allow list,
	// is not penalised for them), and refuses the outsider's blocks when
	// the relay's heads name them.
	eventually(t, 30*time.Second, "the relay's mesh holds both peers", func() bool {
		st, err := relay.Status(ctx)
		return err == nil && st.Mesh == 2
	})
	out := mustSignal(t, "intruder.says")
	if err := outsider.Publish(ctx, out); err != nil {
		t.Fatal(err)
	}
	outs := []string{out.ID}
	eventually(t, 30*time.Second, "a refuses the outsider's gossip", func() bool {
		st, err := a.Status(ctx)
		return err == nil && st.Rejected["origin_not_allowed"] > 0
	})
	mine := mustSignal(t, "member.says")
	if err := relay.Publish(ctx, mine); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the relay delivers them all", func() bool { return recRelay.count() == 1+len(outs) })
	t0 := time.Now()
	eventually(t, 60*time.Second, "a delivers the member's signal", func() bool { return recA.count() >= 1 })
	t.Logf("a delivered the member's signal after %v (%d outsider signals)", time.Since(t0), len(outs))
	eventually(t, 60*time.Second, "a refuses the outsider's journal blocks", func() bool {
		st, err := a.Status(ctx)
		return err == nil && st.Rejected["journal_not_allowed"] > 0
	})
	if got := recA.snapshot(); len(got) != 1 || got[0].ID != mine.ID {
		t.Fatalf("a delivered %d signals, want only the member's", len(got))
	}
	for _, id := range outs {
		if got, err := a.Get(ctx, id); err == nil {
			t.Fatalf("a holds the outsider's signal %s", got.ID)
		}
	}
}
