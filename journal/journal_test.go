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
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// stamp gives s the extensions a node would: publisher and causal stamp.
func stamp(t testing.TB, s *signalmesh.Signal, peer string, st causal.Stamp) *signalmesh.Signal {
	t.Helper()
	if err := s.SetExtension(signalmesh.ExtPeer, peer); err != nil {
		t.Fatal(err)
	}
	if err := s.SetExtension(signalmesh.ExtCausal, st.Format()); err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t testing.TB, d ds.Datastore, sigs ...*signalmesh.Signal) {
	t.Helper()
	for _, s := range sigs {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		sig, idx, err := journal.Entries(s, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range append([]journal.Entry{sig}, idx...) {
			if err := d.Put(context.Background(), e.Key, e.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// history is a causal history over three peers: each signal depends on its
// peer's previous one, sometimes on another peer's latest (a direct
// dependency, with a Lamport time above it), and sometimes names a cause
// learned out of band (a later signal of another peer may be its cause:
// its Lamport time says nothing about it).
func history(t *testing.T, r *rand.Rand, n int) (hist []*signalmesh.Signal, before func(i, j int) bool) {
	peers := []string{"peer-a", "peer-b", "peer-c"}
	seq := map[string]uint64{}
	lam := map[string]uint64{}
	last := map[string]int{}
	edges := map[int][]int{} // i -> what i depends on directly
	for i := 0; i < n; i++ {
		p := peers[r.IntN(3)]
		seq[p]++
		st := causal.Stamp{Seq: seq[p], Lamport: lam[p] + 1}
		if j, ok := last[p]; ok {
			edges[i] = append(edges[i], j)
		}
		if q := peers[r.IntN(3)]; q != p && r.IntN(2) == 0 {
			if j, ok := last[q]; ok {
				st.Deps = []causal.Ref{{Origin: causal.PeerRef(q), Seq: seq[q]}}
				st.Lamport = max(st.Lamport, lam[q]+1)
				edges[i] = append(edges[i], j)
			}
		}
		var opts []signalmesh.Option
		if i > 0 && r.IntN(4) == 0 {
			j := r.IntN(i)
			opts = append(opts, signalmesh.WithCause(hist[j]))
			edges[i] = append(edges[i], j)
		}
		lam[p] = st.Lamport
		s, _ := signalmesh.New("h.e", "/t", i, opts...)
		hist = append(hist, stamp(t, s, p, st))
		last[p] = i
	}
	var reach func(i, j int, seen map[int]bool) bool
	reach = func(i, j int, seen map[int]bool) bool { // j depends on i, transitively
		for _, k := range edges[j] {
			if k == i || !seen[k] && reach(i, k, seen) {
				return true
			}
			seen[k] = true
		}
		return false
	}
	return hist, func(i, j int) bool { return reach(i, j, map[int]bool{}) }
}

func TestReplayIsCausalAndIndependentOfInsertionOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	hist, before := history(t, r, 200)
	index := map[string]int{}
	for i, s := range hist {
		index[s.ID] = i
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
		if len(got) != len(hist) {
			t.Fatalf("replay has %d signals, want %d", len(got), len(hist))
		}
		var ids []string
		for _, s := range got {
			ids = append(ids, s.ID)
		}
		for a := range got {
			for b := a + 1; b < len(got); b++ {
				if before(index[got[b].ID], index[got[a].ID]) {
					t.Fatalf("replay puts %d after %d, which it happened before", index[got[b].ID], index[got[a].ID])
				}
			}
		}
		orders = append(orders, ids)
	}
	if !slices.Equal(orders[0], orders[1]) || !slices.Equal(orders[1], orders[2]) {
		t.Fatal("replay order depends on insertion order")
	}
}

// One id under two sources is two signals; the same event journaled by two
// peers (a retry) is replayed once; every place stays readable.
func TestIdentityIsSourceAndID(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	billing, _ := signalmesh.New("order.paid", "/billing", 1, signalmesh.WithID("42"))
	shipping, _ := signalmesh.New("order.shipped", "/shipping", 2, signalmesh.WithID("42"))
	retry := billing.Clone()
	put(t, d,
		stamp(t, billing, "peer-a", causal.Stamp{Seq: 1, Lamport: 1}),
		stamp(t, shipping, "peer-b", causal.Stamp{Seq: 1, Lamport: 1}),
		stamp(t, retry, "peer-b", causal.Stamp{Seq: 2, Lamport: 2}))
	j := journal.New(d)
	all, bad, err := j.All(ctx)
	if err != nil || len(all) != 3 || bad != 0 {
		t.Fatalf("All = %d, %d bad, %v", len(all), bad, err)
	}
	got, err := j.Replay(ctx, nil)
	if err != nil || len(got) != 2 || got[0].Source == got[1].Source {
		t.Fatalf("Replay = %v, %v; want the billing and the shipping event once each", got, err)
	}
	cs, err := j.Copies(ctx, "42")
	if err != nil || len(cs) != 3 {
		t.Fatalf("Copies = %v, %v", cs, err)
	}
	for _, c := range cs {
		s, err := j.At(ctx, c.Ref.Origin, c.Ref.Seq)
		if err != nil || s.Source != c.Source || journal.ContentDigest(s) != c.Digest {
			t.Fatalf("At(%v) = %v, %v", c.Ref, s, err)
		}
	}
	if journal.ContentDigest(billing) != journal.ContentDigest(retry) || journal.ContentDigest(billing) == journal.ContentDigest(shipping) {
		t.Fatal("content digest: same event must match, different must not")
	}
	origins, err := j.Origins(ctx)
	if err != nil || origins[causal.PeerRef("peer-b")] != 2 || origins[causal.PeerRef("peer-a")] != 1 {
		t.Fatalf("Origins = %v, %v", origins, err)
	}
}

func TestGetCausesEffectsAndBadEntries(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	root, _ := signalmesh.New("a.root", "/t", nil)
	mid, _ := signalmesh.New("a.mid", "/t", nil, signalmesh.WithCause(root))
	leaf, _ := signalmesh.New("a.leaf", "/t", nil, signalmesh.WithCause(mid))
	orphan, _ := signalmesh.New("a.orphan", "/t", nil, signalmesh.WithCauseID("never-journaled"))
	for i, s := range []*signalmesh.Signal{root, mid, leaf, orphan} {
		put(t, d, stamp(t, s, "peer-a", causal.Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 1)}))
	}
	if err := d.Put(ctx, journal.SignalKey(causal.PeerRef("peer-a"), 9), []byte("nope")); err != nil {
		t.Fatal(err)
	}
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

func TestKeysAreParsedBack(t *testing.T) {
	ref := causal.PeerRef("peer-a")
	for _, seq := range []uint64{1, 255, 1 << 40} {
		r, s, ok := journal.ParseSignalKey(journal.SignalKey(ref, seq))
		if !ok || r != ref || s != seq {
			t.Errorf("ParseSignalKey(SignalKey(%s, %d)) = %s, %d, %v", ref, seq, r, s, ok)
		}
	}
	for _, id := range []string{"a/b", "..", "/", "x y", "é"} {
		if _, _, ok := journal.ParseSignalKey(journal.IndexKey(id, ref, 1)); ok {
			t.Errorf("an index key parsed as a signal key: %s", journal.IndexKey(id, ref, 1))
		}
		if k := journal.IndexKey(id, ref, 1); len(k.Namespaces()) != 3 {
			t.Errorf("IndexKey(%q) = %s", id, k)
		}
	}
}
