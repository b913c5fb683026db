package journal_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// honestHistory is a history over three peers where every effect was
// published by a peer that had seen its cause (its Lamport time is above
// the cause's), as a handler's effect is: chains and fan-outs, and, with
// retries, copies of one event journaled twice.
func honestHistory(t testing.TB, r *rand.Rand, n int, retries bool) []*signalmesh.Signal {
	peers := []string{"peer-a", "peer-b", "peer-c"}
	seq := map[string]uint64{}
	lam := map[string]uint64{}
	var hist []*signalmesh.Signal
	var lamOf []uint64
	for i := range n {
		p := peers[r.IntN(3)]
		seq[p]++
		st := causal.Stamp{Seq: seq[p], Lamport: lam[p] + 1}
		var s *signalmesh.Signal
		switch {
		case retries && i > 0 && r.IntN(10) == 0: // a retry of an earlier event, journaled by p
			j := r.IntN(i)
			s = hist[j].Clone()
			delete(s.Extensions, signalmesh.ExtPeer)
			delete(s.Extensions, signalmesh.ExtCausal)
			st.Lamport = max(st.Lamport, lamOf[j]+1)
		case i > 0 && r.IntN(3) > 0: // an effect of an earlier signal, often a recent one (chains)
			j := max(0, i-1-r.IntN(min(i, 5)))
			if r.IntN(3) == 0 {
				j = r.IntN(i)
			}
			s, _ = signalmesh.New("h.effect", "/t", i, signalmesh.WithCause(hist[j]))
			st.Lamport = max(st.Lamport, lamOf[j]+1)
		default:
			s, _ = signalmesh.New("h.root", "/t", i)
		}
		lam[p] = st.Lamport
		hist = append(hist, stamp(t, s, p, st))
		lamOf = append(lamOf, st.Lamport)
	}
	return hist
}

// ids names each signal by id and place.
func ids(sigs []*signalmesh.Signal) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		ref, seq := journal.Place(s)
		out[i] = fmt.Sprintf("%s@%s:%d", s.ID, ref, seq)
	}
	return out
}

// events names each signal by its identity (source, id, content), sorted:
// copies of one retried event are one.
func events(sigs []*signalmesh.Signal) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		out[i] = fmt.Sprintf("%s %s %x", s.Source, s.ID, journal.ContentDigest(s))
	}
	slices.Sort(out)
	return out
}

// Effects and Trace read through the effects index give what the filter
// over the whole journal gave (the code before the index) for every id:
// the same signals in the same order for a history of chains and
// fan-outs whose effects were published by a peer that saw their cause;
// the same events where retries or causes learned out of band (an effect
// whose Lamport time is below its cause's) make the whole journal's
// order differ from the order of the effects alone (see Effects).
func TestEffectsAndTraceAgreeWithTheWholeJournal(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	outOfBand, _ := history(t, r, 300)
	for name, hist := range map[string][]*signalmesh.Signal{"honest": honestHistory(t, r, 400, false),
		"retries": honestHistory(t, r, 400, true), "out of band": outOfBand} {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		put(t, d, hist...)
		j := journal.New(d)
		all, err := j.Replay(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		fanout, deep := 0, 0
		for _, s := range hist {
			var want []*signalmesh.Signal
			for _, a := range all {
				if a.CauseID() == s.ID {
					want = append(want, a)
				}
			}
			got, err := j.Effects(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			g, w := ids(got), ids(want)
			if name != "honest" {
				g, w = events(got), events(want)
			}
			if !slices.Equal(g, w) {
				t.Fatalf("%s: Effects(%s) = %v, want %v", name, s.ID, g, w)
			}
			_, tree, err := j.Trace(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			g, w = ids(tree), ids(journal.Descendants(all, s.ID))
			if name != "honest" {
				g, w = events(tree), events(journal.Descendants(all, s.ID))
			}
			if !slices.Equal(g, w) {
				t.Fatalf("%s: Trace(%s) descendants = %v, want %v", name, s.ID, g, w)
			}
			if len(want) > 1 {
				fanout++
			}
			if len(tree) > len(want)+1 {
				deep++
			}
		}
		if fanout == 0 || deep == 0 {
			t.Fatalf("%s: the history has %d fan-outs and %d trees deeper than one level: it tests too little", name, fanout, deep)
		}
	}
}

// An effects index entry whose signal is not journaled (yet), does not
// decode, or names another cause is skipped; a signal past an age limit
// is left out, as the views over the whole journal leave it out.
func TestEffectsSkipWhatTheJournalSkips(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	root, _ := signalmesh.New("a.root", "/t", nil)
	kept, _ := signalmesh.New("a.kept", "/t", nil, signalmesh.WithCause(root), signalmesh.WithTime(now))
	old, _ := signalmesh.New("sensor.old", "/t", nil, signalmesh.WithCause(root), signalmesh.WithTime(now.Add(-2*time.Hour)))
	other, _ := signalmesh.New("a.other", "/t", nil, signalmesh.WithCauseID("else"))
	put(t, d, stamp(t, root, "peer-a", causal.Stamp{Seq: 1, Lamport: 1}),
		stamp(t, kept, "peer-a", causal.Stamp{Seq: 2, Lamport: 2}),
		stamp(t, old, "peer-a", causal.Stamp{Seq: 3, Lamport: 3}),
		stamp(t, other, "peer-a", causal.Stamp{Seq: 4, Lamport: 4}))
	ref := causal.PeerRef("peer-a")
	for _, k := range []ds.Key{
		journal.EffectKey(root.ID, ref, 4), // another cause's signal
		journal.EffectKey(root.ID, ref, 5), // not journaled
		journal.EffectKey(root.ID, ref, 6), // does not decode
		journal.EffectKey(root.ID, ref, 1), // the root itself (no cause)
	} {
		if err := d.Put(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Put(ctx, journal.SignalKey(ref, 6), []byte("nope")); err != nil {
		t.Fatal(err)
	}
	j := journal.New(d)
	j.SetRetention(journal.Retention{{Pattern: "sensor.**", MaxAge: time.Hour}}, func() time.Time { return now })
	got, err := j.Effects(ctx, root.ID)
	if err != nil || len(got) != 1 || got[0].ID != kept.ID {
		t.Fatalf("Effects = %v, %v; want only %s", ids(got), err, kept.ID)
	}
	if _, tree, err := j.Trace(ctx, root.ID); err != nil || len(tree) != 1 || tree[0].ID != kept.ID {
		t.Fatalf("Trace = %v, %v; want only %s", ids(tree), err, kept.ID)
	}
	places, err := j.EffectPlaces(ctx, root.ID)
	if err != nil || len(places) != 6 {
		t.Fatalf("EffectPlaces = %v, %v; want the 6 entries", places, err)
	}
}

// countingStore counts the signal entries (/s/...) read from a store, by
// Get or by Query.
type countingStore struct {
	ds.Datastore
	reads atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if strings.HasPrefix(k.String(), "/s/") {
		c.reads.Add(1)
	}
	return c.Datastore.Get(ctx, k)
}

func (c *countingStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := c.Datastore.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return query.ResultsFromIterator(q, query.Iterator{
		Next: func() (query.Result, bool) {
			r, ok := res.NextSync()
			if ok && r.Error == nil && strings.HasPrefix(r.Key, "/s/") {
				c.reads.Add(1)
			}
			return r, ok
		},
		Close: res.Close,
	}), nil
}

// Effects and Trace read the signals of the result, not the journal: of
// 5,000 journaled signals, a fan-out of 3 and a chain of 4 below it cost
// a read each (before the effects index, every call read all 5,000).
func TestEffectsReadOnlyTheirSignals(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{Datastore: dssync.MutexWrap(ds.NewMapDatastore())}
	root, _ := signalmesh.New("a.root", "/t", nil)
	sigs := []*signalmesh.Signal{root}
	for range 3 {
		s, _ := signalmesh.New("a.fan", "/t", nil, signalmesh.WithCause(root))
		sigs = append(sigs, s)
	}
	for cause := sigs[1]; len(sigs) < 8; cause = sigs[len(sigs)-1] {
		s, _ := signalmesh.New("a.chain", "/t", nil, signalmesh.WithCause(cause))
		sigs = append(sigs, s)
	}
	for i := len(sigs); i < 5000; i++ {
		s, _ := signalmesh.New("a.other", "/t", i, signalmesh.WithCauseID(fmt.Sprint("elsewhere-", i%50)))
		sigs = append(sigs, s)
	}
	for i, s := range sigs {
		put(t, store, stamp(t, s, "peer-a", causal.Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 1)}))
	}
	j := journal.New(store)
	store.reads.Store(0)
	got, err := j.Effects(ctx, root.ID)
	if err != nil || len(got) != 3 {
		t.Fatalf("Effects = %d signals, %v; want 3", len(got), err)
	}
	if n := store.reads.Load(); n != 3 {
		t.Fatalf("Effects read %d journal entries for 3 effects", n)
	}
	store.reads.Store(0)
	_, tree, err := j.Trace(ctx, root.ID)
	if err != nil || len(tree) != 7 {
		t.Fatalf("Trace = %d descendants, %v; want 7", len(tree), err)
	}
	if n := store.reads.Load(); n > 7+1 { // the descendants, and the root for its causes
		t.Fatalf("Trace read %d journal entries for 7 descendants", n)
	}
}
