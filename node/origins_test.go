package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// 2,000 ephemeral publishers each journal a signal and leave; past
// retention and pruned, the node forgets them: its causal core holds the
// live origins only. One that returns has its new signals delivered in
// its order (the later one first waits), a late copy of a pruned signal
// is a duplicate, and after a clean reopen and after a crash the next
// signal of one that left is delivered at once (its floor is on disk).
func TestDepartedOriginsAreForgotten(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	const departed = 2000
	cfg := node.Config{Mesh: fmt.Sprintf("origins-%d", time.Now().UnixNano()), DataDir: t.TempDir(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "**", MaxAge: time.Hour}}}
	cfg.Params.Prune = 50 * time.Millisecond
	open := func() (*node.Node, *recorder) {
		t.Helper()
		n, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		if _, err := n.Subscribe("**", rec.handle); err != nil {
			t.Fatal(err)
		}
		return n, rec
	}
	keys := make([]crypto.PrivKey, departed)
	for i := range keys {
		var err error
		if keys[i], _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	// put journals origin i's signal seq, as its publisher would have.
	put := func(n *node.Node, i int, seq uint64, at time.Time) *signalmesh.Signal {
		t.Helper()
		id, _ := peer.IDFromPrivateKey(keys[i])
		s := mustSignal(t, "eph.reading", signalmesh.WithTime(at), signalmesh.WithSubject(fmt.Sprint(i, "/", seq)),
			signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
			signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: seq, Lamport: seq}.Format()))
		w := signedWire(t, n.Mesh(), keys[i], s)
		if err := n.JournalPut(ctx, journal.SignalKey(causal.PeerRef(id.String()), seq), w); err != nil {
			t.Fatal(err)
		}
		return s
	}
	status := func(n *node.Node) node.Status {
		t.Helper()
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	n, rec := open()
	old := time.Now().Add(-2 * time.Hour)
	var first []*signalmesh.Signal
	for i := range departed {
		first = append(first, put(n, i, 1, old))
	}
	eventually(t, 120*time.Second, "the departed origins forgotten", func() bool {
		st := status(n)
		return st.Forgotten >= departed && st.Origins == 0
	})
	if got := rec.count(); got != departed {
		t.Fatalf("delivered %d signals, want %d", got, departed)
	}

	// Origin 5 returns: its 3 comes first and waits for its 2.
	s3 := put(n, 5, 3, time.Now())
	eventually(t, 20*time.Second, "the returning origin's later signal waits", func() bool { return status(n).Buffered == 1 })
	if rec.count() != departed {
		t.Fatal("a returning origin's seq 3 was delivered before its seq 2")
	}
	s2 := put(n, 5, 2, time.Now())
	eventually(t, 20*time.Second, "the returning origin's signals delivered", func() bool { return rec.count() == departed+2 })
	got := rec.snapshot()
	if got[departed].ID != s2.ID || got[departed+1].ID != s3.ID {
		t.Fatalf("the returning origin's signals delivered as %s, %s; want seq 2 then 3", got[departed].Subject, got[departed+1].Subject)
	}
	// A late copy of origin 7's pruned signal: a duplicate.
	deduped := status(n).Deduped
	w := signedWire(t, n.Mesh(), keys[7], first[7])
	if err := n.JournalPut(ctx, journal.SignalKey(causal.PeerRef(first[7].Extensions[signalmesh.ExtPeer].(string)), 1), w); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the late copy deduplicated", func() bool { return status(n).Deduped > deduped })
	eventually(t, 20*time.Second, "origin 7 forgotten again", func() bool { return status(n).Origins == 1 })
	if rec.seen[first[7].ID] != 1 {
		t.Fatalf("a late copy of a forgotten origin's signal was delivered again (%d times)", rec.seen[first[7].ID])
	}

	// A clean reopen, then a crash: the next signal of one that left is
	// delivered at once, not held for its predecessors.
	for round, closeIt := range []func(*node.Node) error{(*node.Node).Close, (*node.Node).CloseAsCrash} {
		if err := closeIt(n); err != nil {
			t.Fatal(err)
		}
		n, rec = open()
		// The live ones (5, and 10 after the first round), and one the
		// journal still lists (recalled, forgotten again at the next round).
		if st := status(n); st.Origins > 4 {
			t.Fatalf("round %d: the reopened node holds %d origins, want the few live ones", round, st.Origins)
		}
		s := put(n, 10+round, 2, time.Now())
		eventually(t, 20*time.Second, fmt.Sprintf("round %d: the next signal of an origin that left", round), func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return rec.seen[s.ID] == 1
		})
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A journal block holding a put and a tombstone is never walked by a
// prune round (package crdt keeps such blocks whole), so the round sees
// nothing of the entries it holds. An origin with such an entry must not
// be forgotten: the node asks the journal itself whether it holds any
// entry of a candidate. Origin 1 leaves normally in the same round: once
// it is forgotten, origin 0 must still be held.
func TestOriginsWithAnEntryInATombstoneBlockAreNotForgotten(t *testing.T) {
	checkLeaks(t)
	m := newReviewMesh(t, 2, nil)
	n, rec := m.open()
	defer n.Close()
	ctx := m.ctx
	old := time.Now().Add(-2 * time.Hour)
	junk := ds.NewKey("/junk/entry")
	if err := n.JournalPut(ctx, junk, []byte("x")); err != nil {
		t.Fatal(err)
	}
	x1 := mustSignal(t, "eph.reading", signalmesh.WithTime(old), signalmesh.WithSubject("0/1"),
		signalmesh.WithExtension(signalmesh.ExtPeer, m.id(0)),
		signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: 1, Lamport: 101}.Format()))
	k1 := journal.SignalKey(m.ref(0), 1)
	if err := n.JournalBatch(ctx, map[ds.Key][]byte{k1: signedWire(t, n.Mesh(), m.keys[0], x1)}, []ds.Key{junk}); err != nil {
		t.Fatal(err)
	}
	x2 := m.put(n, 0, 2, old)
	eventually(t, 20*time.Second, "origin 0 delivered", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[x1.ID] == 1 && rec.seen[x2.ID] == 1
	})
	m.put(n, 1, 1, old)
	eventually(t, 20*time.Second, "origin 1 forgotten", func() bool {
		st := m.status(n)
		return st.Forgotten >= 1 && st.Clock.Get(m.id(1)) == 0
	})
	if _, err := n.JournalGet(ctx, k1); err != nil {
		t.Fatalf("the journal no longer holds origin 0's 1: %v", err)
	}
	if st := m.status(n); st.Clock.Get(m.id(0)) != 2 {
		t.Fatalf("origin 0 forgotten (clock %v, forgotten %d) while the journal holds its 1", st.Clock, st.Forgotten)
	}
}

// A recorded give-up about a signal below a forgotten origin's floor is
// deleted at start (it decides nothing, and would recall and pin the
// origin); one above it is kept.
func TestOriginsMootDecisionRecordsDeletedAtStart(t *testing.T) {
	checkLeaks(t)
	store := dssync.MutexWrap(ds.NewMapDatastore())
	m := newReviewMesh(t, 1, store)
	n, _ := m.open()
	old := time.Now().Add(-2 * time.Hour)
	m.put(n, 0, 1, old)
	m.put(n, 0, 2, old)
	eventually(t, 20*time.Second, "the departed origin forgotten", func() bool {
		st := m.status(n)
		return st.Forgotten == 1 && st.Origins == 0
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	key := func(seq uint64) ds.Key {
		return ds.RawKey(fmt.Sprintf("/signalmesh/%s/decided/%s/%016x", m.cfg.Mesh, m.ref(0), seq))
	}
	for _, seq := range []uint64{2, 5} {
		if err := store.Put(m.ctx, key(seq), []byte{1, 0}); err != nil { // its cause given up
			t.Fatal(err)
		}
	}
	n, _ = m.open()
	defer n.Close()
	if ok, err := store.Has(m.ctx, key(2)); err != nil || ok {
		t.Fatalf("the give-up record of a signal below the floor is still there (%v, %v)", ok, err)
	}
	if ok, err := store.Has(m.ctx, key(5)); err != nil || !ok {
		t.Fatalf("the give-up record of a signal above the floor was deleted (%v, %v)", ok, err)
	}
}
