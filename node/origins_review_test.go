package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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

// failFloors fails, once armed, every read of a floor record (a disk
// error, a store being closed).
type failFloors struct {
	ds.Batching
	armed atomic.Bool
	hits  atomic.Int64
}

func (f *failFloors) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if f.armed.Load() && strings.Contains(k.String(), "/floor/") {
		f.hits.Add(1)
		return nil, errors.New("injected store read error")
	}
	return f.Batching.Get(ctx, k)
}

// reviewMesh is a node with a one-hour age limit on everything, pruned
// every 50 ms, and publishers whose signals the test journals directly.
type reviewMesh struct {
	t    *testing.T
	ctx  context.Context
	cfg  node.Config
	keys []crypto.PrivKey
}

func newReviewMesh(t *testing.T, publishers int, st ds.Batching) *reviewMesh {
	m := &reviewMesh{t: t, ctx: context.Background()}
	m.cfg = node.Config{Mesh: fmt.Sprintf("origins-review-%d", time.Now().UnixNano()),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "**", MaxAge: time.Hour}}}
	if st != nil {
		m.cfg.Datastore = st
	} else {
		m.cfg.DataDir = t.TempDir()
	}
	m.cfg.Params.Prune = 50 * time.Millisecond
	for range publishers {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		m.keys = append(m.keys, k)
	}
	return m
}

func (m *reviewMesh) open() (*node.Node, *recorder) {
	m.t.Helper()
	n, err := node.New(m.ctx, m.cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle); err != nil {
		m.t.Fatal(err)
	}
	return n, rec
}

func (m *reviewMesh) id(i int) string {
	id, _ := peer.IDFromPrivateKey(m.keys[i])
	return id.String()
}

func (m *reviewMesh) ref(i int) string {
	id, _ := peer.IDFromPrivateKey(m.keys[i])
	return causal.PeerRef(id.String())
}

// put journals publisher i's signal seq with the given dependencies.
func (m *reviewMesh) put(n *node.Node, i int, seq uint64, at time.Time, deps ...causal.Ref) *signalmesh.Signal {
	m.t.Helper()
	id, _ := peer.IDFromPrivateKey(m.keys[i])
	lam := seq + 100
	s := mustSignal(m.t, "eph.reading", signalmesh.WithTime(at), signalmesh.WithSubject(fmt.Sprint(i, "/", seq)),
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: seq, Lamport: lam, Deps: deps}.Format()))
	m.putSignal(n, i, seq, s)
	return s
}

func (m *reviewMesh) putSignal(n *node.Node, i int, seq uint64, s *signalmesh.Signal) {
	m.t.Helper()
	w := signedWire(m.t, n.Mesh(), m.keys[i], s)
	if err := n.JournalPut(m.ctx, journal.SignalKey(m.ref(i), seq), w); err != nil {
		m.t.Fatal(err)
	}
}

func (m *reviewMesh) status(n *node.Node) node.Status {
	m.t.Helper()
	st, err := n.Status(m.ctx)
	if err != nil {
		m.t.Fatal(err)
	}
	return st
}

// settle polls for up to d until cond holds, and reports whether it did.
func settle(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// Review of origins: a forgotten origin is forgotten again only when a
// prune round deletes the journal entry at exactly its delivered
// sequence (departures.note). Once recalled by something that journals
// nothing of it (a signal naming it as a dependency), the origin has
// nothing left in the journal to prune and stays in memory for good.
// Anyone can resurrect every departed origin that way, 48 per signal,
// for ever; an honest mesh does it too, with every stamp whose frontier
// still names one. (While its entries sit in a block kept as a head, each
// round notes them again and it is forgotten again: origin 2's block is
// the head here, so origin 0's blocks are deleted.)
func TestOriginsReviewRecalledOriginIsForgottenAgain(t *testing.T) {
	checkLeaks(t)
	m := newReviewMesh(t, 3, nil)
	n, rec := m.open()
	defer n.Close()
	old := time.Now().Add(-2 * time.Hour)
	m.put(n, 0, 1, old) // origin 0 publishes 1 and 2, and leaves
	m.put(n, 0, 2, old)
	m.put(n, 2, 1, old) // so does origin 2, after it
	eventually(t, 20*time.Second, "the departed origins forgotten", func() bool {
		st := m.status(n)
		return st.Forgotten >= 2 && st.Origins == 0
	})
	time.Sleep(300 * time.Millisecond) // a few rounds: origin 0's blocks deleted, the node no longer lists it as departing
	// A live origin's signal names origin 0's last signal (its frontier
	// did when it was published).
	live := m.put(n, 1, 1, time.Now(), causal.Ref{Origin: m.ref(0), Seq: 2})
	eventually(t, 20*time.Second, "the live signal delivered", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[live.ID] == 1
	})
	if !settle(3*time.Second, func() bool { return m.status(n).Origins == 1 }) {
		st := m.status(n)
		t.Fatalf("after 3 s of prune rounds (every 50 ms) the core holds %d origins (clock %v; origin 0 is %s), want 1 (the live one): the recalled origin 0 is never forgotten again", st.Origins, st.Clock, m.ref(0))
	}
}

// Review of origins: the origins a prune round found past retention but
// could not forget yet (pinned: a waiting signal names it) are kept in
// n.departing, in memory only. After a Close and reopen, nothing notes
// them again (their last entry is pruned already), so they are never
// forgotten. The same holds after a crash right after a round, and for
// every departed origin on a node upgraded to this version (their
// entries were pruned before). The control (no restart) forgets it.
func TestOriginsReviewPinnedDepartingOriginIsForgottenAfterARestart(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			checkLeaks(t)
			m := newReviewMesh(t, 2, nil)
			n, _ := m.open()
			defer func() { n.Close() }()
			m.put(n, 0, 1, time.Now().Add(-2*time.Hour)) // origin 0: one signal, past retention
			eventually(t, 20*time.Second, "origin 0 delivered", func() bool { return m.status(n).Origins == 1 })
			// Origin 1's second signal names it and waits for its first.
			m.put(n, 1, 2, time.Now(), causal.Ref{Origin: m.ref(0), Seq: 1})
			eventually(t, 20*time.Second, "origin 1's 2 waiting", func() bool { return m.status(n).Buffered == 1 })
			eventually(t, 20*time.Second, "origin 0's signal pruned", func() bool {
				c, _, err := n.JournalDigest(m.ctx)
				return err == nil && c == 1
			})
			time.Sleep(200 * time.Millisecond) // a few more rounds: origin 0 is pinned
			if st := m.status(n); st.Forgotten != 0 || st.Origins != 2 {
				t.Fatalf("forgotten %d, origins %d: origin 0 should be pinned by origin 1's waiting signal", st.Forgotten, st.Origins)
			}
			if restart {
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
				n, _ = m.open() // origin 1's 2 is journaled above a hole: Pull names 1 first
			}
			m.put(n, 1, 1, time.Now()) // unpins origin 0
			eventually(t, 20*time.Second, "origin 1 delivered", func() bool { return m.status(n).Buffered == 0 })
			if !settle(3*time.Second, func() bool { return m.status(n).Origins == 1 }) {
				st := m.status(n)
				t.Fatalf("after 3 s of prune rounds the core holds %d origins (clock %v, forgotten %d), want 1: the departed origin 0 is never forgotten", st.Origins, st.Clock, st.Forgotten)
			}
		})
	}
}

// A floor record that cannot be read is taken for no floor (documented
// in origins.go, Limits: Recall cannot fail), and counted: the returning
// origin's next signal waits DepWait for the sequences below it, pruned
// long ago, and is then delivered as a give-up.
func TestOriginsFloorReadErrorIsAGiveUpAfterDepWait(t *testing.T) {
	checkLeaks(t)
	st := &failFloors{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	m := newReviewMesh(t, 1, st)
	m.cfg.Params.DepWait = 300 * time.Millisecond
	n, rec := m.open()
	defer n.Close()
	old := time.Now().Add(-2 * time.Hour)
	m.put(n, 0, 1, old)
	m.put(n, 0, 2, old)
	eventually(t, 20*time.Second, "the departed origin forgotten", func() bool {
		st := m.status(n)
		return st.Forgotten >= 1 && st.Origins == 0
	})
	st.armed.Store(true) // a transient read error
	s3 := m.put(n, 0, 3, time.Now())
	eventually(t, 20*time.Second, "the floor read failed", func() bool { return st.hits.Load() > 0 })
	st.armed.Store(false)
	eventually(t, 20*time.Second, "the returning origin's next signal delivered as a give-up", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[s3.ID] == 1
	})
}

// Causal order is promised for retained signals (origins.go, Limits; the
// package causal doc): a signal already past retention when it arrives
// is delivered, its origin is forgotten at the next round, and what this
// node publishes after that does not name it.
func TestOriginsLateOldSignalIsNotNamedOnceForgotten(t *testing.T) {
	checkLeaks(t)
	m := newReviewMesh(t, 1, nil)
	n, rec := m.open()
	defer n.Close()
	x1 := m.put(n, 0, 1, time.Now().Add(-2*time.Hour)) // arrives now, dated two hours ago
	eventually(t, 20*time.Second, "x:1 delivered and its origin forgotten", func() bool {
		rec.mu.Lock()
		seen := rec.seen[x1.ID] == 1
		rec.mu.Unlock()
		return seen && m.status(n).Forgotten == 1
	})
	reaction := mustSignal(t, "eph.reaction")
	if err := n.Publish(m.ctx, reaction); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the reaction delivered", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.seen[reaction.ID] == 1 })
	var stamp causal.Stamp
	for _, s := range rec.snapshot() {
		if s.ID == reaction.ID {
			v, _ := s.Extensions[signalmesh.ExtCausal].(string)
			var err error
			if stamp, err = causal.ParseStamp(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range stamp.Deps {
		if d.Origin == m.ref(0) {
			t.Fatalf("the reaction's stamp %+v names the forgotten origin", stamp)
		}
	}
}
