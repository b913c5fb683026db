package journal_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/vclock"
)

// stamp gives s the extensions a node would: publisher and clock.
func stamp(t *testing.T, s *signalmesh.Signal, peer string, c vclock.Clock) *signalmesh.Signal {
	t.Helper()
	text, _ := c.MarshalText()
	if err := s.SetExtension(signalmesh.ExtPeer, peer); err != nil {
		t.Fatal(err)
	}
	if err := s.SetExtension(signalmesh.ExtClock, string(text)); err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, d ds.Datastore, sigs ...*signalmesh.Signal) {
	t.Helper()
	for _, s := range sigs {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Put(context.Background(), journal.Key(s.ID), b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReplayIsCausalAndIndependentOfInsertionOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// A causal history over three peers.
	clocks := map[string]vclock.Clock{}
	peers := []string{"a", "b", "c"}
	var hist []*signalmesh.Signal
	var hc []vclock.Clock
	for i := 0; i < 200; i++ {
		p := peers[r.IntN(3)]
		if len(hc) > 0 && r.IntN(2) == 0 {
			clocks[p] = clocks[p].Merge(hc[r.IntN(len(hc))])
		}
		clocks[p] = clocks[p].Increment(p)
		s, _ := signalmesh.New("h.e", "/t", nil)
		hist = append(hist, stamp(t, s, p, clocks[p]))
		hc = append(hc, clocks[p])
	}
	var orders [][]string
	for trial := 0; trial < 3; trial++ {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		shuffled := slices.Clone(hist)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		put(t, d, shuffled...)
		got, err := journal.New(d).Replay(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[string]int{}
		var ids []string
		for i, s := range got {
			pos[s.ID] = i
			ids = append(ids, s.ID)
		}
		for i := range hist {
			for j := range hist {
				if hc[i].Compare(hc[j]) == vclock.Before && pos[hist[i].ID] > pos[hist[j].ID] {
					t.Fatalf("replay puts %d after %d, which it happened before", i, j)
				}
			}
		}
		orders = append(orders, ids)
	}
	if !slices.Equal(orders[0], orders[1]) || !slices.Equal(orders[1], orders[2]) {
		t.Fatal("replay order depends on insertion order")
	}
}

func TestGetCausesEffectsAndBadEntries(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	root, _ := signalmesh.New("a.root", "/t", nil)
	mid, _ := signalmesh.New("a.mid", "/t", nil, signalmesh.WithCause(root))
	leaf, _ := signalmesh.New("a.leaf", "/t", nil, signalmesh.WithCause(mid))
	orphan, _ := signalmesh.New("a.orphan", "/t", nil, signalmesh.WithCauseID("never-journaled"))
	put(t, d, root, mid, leaf, orphan)
	if err := d.Put(ctx, ds.NewKey("/garbage"), []byte("nope")); err != nil {
		t.Fatal(err)
	}
	j := journal.New(d)
	if _, err := j.Get(ctx, "missing"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get(missing) = %v", err)
	}
	chain, err := j.Causes(ctx, leaf.ID)
	if err != nil || len(chain) != 3 || chain[0].ID != root.ID || chain[2].ID != leaf.ID {
		t.Fatalf("Causes = %v, %v", chain, err)
	}
	chain, err = j.Causes(ctx, orphan.ID)
	if err != nil || len(chain) != 1 {
		t.Fatalf("Causes(orphan) = %v, %v", chain, err)
	}
	eff, err := j.Effects(ctx, root.ID)
	if err != nil || len(eff) != 1 || eff[0].ID != mid.ID {
		t.Fatalf("Effects = %v, %v", eff, err)
	}
	causes, effects, err := j.Trace(ctx, mid.ID)
	if err != nil || len(causes) != 2 || causes[0].ID != root.ID || len(effects) != 1 || effects[0].ID != leaf.ID {
		t.Fatalf("Trace(mid) = %v, %v, %v", causes, effects, err)
	}
	if _, effects, _ = j.Trace(ctx, root.ID); len(effects) != 2 {
		t.Fatalf("Trace(root) effects = %v", effects)
	}
	all, bad, err := j.All(ctx)
	if err != nil || len(all) != 4 || bad != 1 {
		t.Fatalf("All = %d signals, %d bad, %v", len(all), bad, err)
	}
	if journal.Digest(all) == journal.Digest(all[:3]) {
		t.Fatal("digest ignores a signal")
	}
}

func TestKeyIsOneSegment(t *testing.T) {
	for _, id := range []string{"a/b", "..", "/", "x y", "é"} {
		k := journal.Key(id)
		if len(k.Namespaces()) != 1 {
			t.Errorf("Key(%q) = %s", id, k)
		}
	}
}
