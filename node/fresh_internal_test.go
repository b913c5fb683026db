package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// An entry taken out of the fresh set and put back (the adopter was busy)
// is not dropped when the ring comes round to its old slot.
func TestFreshRingKeepsReaddedEntry(t *testing.T) {
	f := newFreshSet(4, 0)
	sig := func(i uint64) *signalmesh.Signal {
		s, err := signalmesh.New("x.y", "/t", nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r := func(i uint64) causal.Ref { return causal.Ref{Origin: "o", Seq: i} }
	old := time.Now().Add(-time.Hour)
	f.add(r(1), sig(1), old)
	for _, s := range f.take(time.Now(), "self", 10) {
		f.add(r(1), s, old)
	}
	for i := uint64(2); i <= 4; i++ {
		f.add(r(i), sig(i), time.Now())
	}
	if _, ok := f.sigs[r(1)]; !ok || len(f.sigs) != 4 {
		t.Fatalf("the re-added entry vanished: %d of 4 held", len(f.sigs))
	}
}

// A torn last line in a cursor log (a crash in the middle of a write) is
// cut at the next open, so the next advance starts a line of its own and
// is read back.
func TestCursorLogCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cursors", "m-s.log")
	if err := os.WriteFile(path, []byte("AAAAAAAAAAA 3 00000000000000aa\nAAAAAAAAAAA 4 0000"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, c, _, _, err := openCursorLog(dir, "m", "s")
	if err != nil || c.Get("AAAAAAAAAAA") != 3 {
		t.Fatalf("open: %v, cursor %v", err, c)
	}
	if err := l.add(handover{"BBBBBBBBBBB", 9, 0xbb}); err != nil {
		t.Fatal(err)
	}
	_ = l.close()
	_, c, ids, _, err := openCursorLog(dir, "m", "s")
	if err != nil || c.Get("BBBBBBBBBBB") != 9 || len(ids) != 2 {
		t.Fatalf("reopen: %v, cursor %v, ids %v", err, c, ids)
	}
}

// testPeer is a new key and its peer id.
func testPeer(t *testing.T) (crypto.PrivKey, string) {
	t.Helper()
	priv, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, id.String()
}

func stampedSig(t *testing.T, id, peer string, seq, lamport uint64, deps []causal.Ref) *signalmesh.Signal {
	t.Helper()
	s, err := signalmesh.New("review.t", "/review", nil, signalmesh.WithID(id))
	if err != nil {
		t.Fatal(err)
	}
	s.Extensions = map[string]any{signalmesh.ExtPeer: peer,
		signalmesh.ExtCausal: causal.Stamp{Seq: seq, Lamport: lamport, Deps: deps}.Format()}
	return s
}

// A signal that came by gossip and waits for a dependency when its journal
// entry arrives is journaled: released later, it is not kept as fresh nor
// adopted (a second delta on every replica that saw it in that order).
func TestJournaledWhileWaitingIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	n, err := New(ctx, Config{Mesh: "waiting", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Params: Params{Adopt: 200 * time.Millisecond, Resync: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	keyA, peerA := testPeer(t)
	keyB, peerB := testPeer(t)
	b1 := stampedSig(t, "b1", peerB, 1, 1, nil)
	a1 := stampedSig(t, "a1", peerA, 1, 2, []causal.Ref{{Origin: causal.PeerRef(peerB), Seq: 1}})
	if Sign("waiting", keyA, a1) != nil || Sign("waiting", keyB, b1) != nil {
		t.Fatal("sign")
	}
	put := func(s *signalmesh.Signal) {
		w, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		e, _, err := journal.Entries(s, w)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.repl.Put(ctx, e.Key, e.Value); err != nil {
			t.Fatal(err)
		}
	}
	n.send(inbound{s: a1.Clone(), via: viaGossip}) // waits for b1
	put(a1)                                        // its entry lands while it waits
	put(b1)                                        // releases b1, then a1
	var st Status
	deadline := time.Now().Add(10 * time.Second)
	for len(st.Clock.Entries()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("a1 and b1 not delivered: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
		if st, err = n.Status(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Right after the release: nothing counts as unjournaled (before, a1
	// did, and was adopted after Params.Adopt).
	if a := n.m.adopted.Load(); a > 0 || st.Unjournaled > 0 {
		t.Fatalf("journaled signals adopted again: %d, unjournaled %d", a, st.Unjournaled)
	}
}

// go-ds-crdt announces a journal entry to the put hook before it commits
// it. A signal delivered from such an entry (here, announced and never
// committed: the moment before the commit, held still) is in the backlog
// of a subscription opened then: before, it was neither fresh nor in the
// journal, and the subscription missed it for good (TestRestartResumes,
// now and then: the adopter journaled what the last process delivered
// right before the test subscribed again).
func TestBacklogHasEntryAnnouncedBeforeCommit(t *testing.T) {
	ctx := context.Background()
	n, err := New(ctx, Config{Mesh: "announced", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	key, id := testPeer(t)
	s := stampedSig(t, "b1", id, 1, 1, nil)
	if err := Sign("announced", key, s); err != nil {
		t.Fatal(err)
	}
	w, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	n.putHook(journal.SignalKey(causal.PeerRef(id), 1), w)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Clock.Get(id) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := make(chan string, 1)
	sub, err := n.Subscribe("review.**", func(_ context.Context, s *signalmesh.Signal) error { got <- s.ID; return nil },
		WithStart(StartBeginning))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case g := <-got:
		if g != "b1" {
			t.Fatalf("handled %s", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delivered signal is not in the backlog")
	}
	if ok, _ := n.repl.Has(ctx, journal.SignalKey(causal.PeerRef(id), 1)); ok {
		t.Fatal("the entry is in the journal: the test shows nothing")
	}
}
