package journal_test

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// streamed collects Stream's ids, stopping after limit (0: all), and the
// cursor after the last.
func streamed(t *testing.T, j *journal.Journal, tops map[string]uint64, after journal.Cursor,
	match func(*signalmesh.Signal) bool, limit int) ([]string, journal.Cursor) {
	t.Helper()
	var ids []string
	var cur journal.Cursor
	err := j.Stream(context.Background(), tops, after, journal.StreamOptions{Match: match}, func(st journal.StreamStep) bool {
		if st.Signal == nil {
			return true
		}
		ids = append(ids, st.Signal.ID)
		cur = maps.Clone(st.Cursor)
		return limit == 0 || len(ids) < limit
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, cur
}

// retried is a random history of n signals journaled in a new store, with
// up to 10 of them (without a cause: a copy with one, later in its own
// chain, can close a cycle of causeids) retried by peer-d, later: each
// event then has two copies. It returns the signals, the copies last.
func retried(t *testing.T, r *rand.Rand, n int) ([]*signalmesh.Signal, ds.Datastore) {
	t.Helper()
	hist, _ := history(t, r, n)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	put(t, d, hist...)
	var seq uint64
	for i := 0; i < 10; i++ {
		c := hist[r.IntN(len(hist))].Clone()
		if c.CauseID() != "" {
			continue
		}
		seq++
		c = stamp(t, c, "peer-d", causal.Stamp{Seq: seq, Lamport: 1000 + seq})
		hist = append(hist, c)
		put(t, d, c)
	}
	return hist, d
}

func idsOf(sigs []*signalmesh.Signal) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		out[i] = s.ID
	}
	return out
}

// Stream gives Replay's order and identities, reading one signal per
// origin at a time, with holes in origins' sequences, bad entries, retry copies
// journaled by two peers, out-of-band causes, and a filter; and a stream
// cut anywhere and resumed from its cursor gives the rest.
func TestStreamIsReplay(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 99))
		hist, _ := history(t, r, 150)
		d := dssync.MutexWrap(ds.NewMapDatastore())
		put(t, d, hist...)
		// Retries: the same event journaled again by peer-d, later (an
		// effect of it waits for both copies; the first in the order is
		// kept).
		var seq uint64
		for i := 0; i < 10; i++ {
			c := hist[r.IntN(len(hist))].Clone()
			if c.CauseID() != "" {
				continue // a copy with a cause, later in its own chain, can close a cycle of causeids
			}
			seq++
			put(t, d, stamp(t, c, "peer-d", causal.Stamp{Seq: seq, Lamport: 1000 + seq}))
		}
		// Holes: a few entries lost.
		for i := 0; i < 5; i++ {
			s := hist[r.IntN(len(hist))]
			ref, q := journal.Place(s)
			if err := d.Delete(ctx, journal.SignalKey(ref, q)); err != nil {
				t.Fatal(err)
			}
		}
		// Bad entries: a value that is no signal at a signal's place.
		for i := 0; i < 2; i++ {
			ref, q := journal.Place(hist[r.IntN(len(hist))])
			if err := d.Put(ctx, journal.SignalKey(ref, q), []byte("nope")); err != nil {
				t.Fatal(err)
			}
		}
		j := journal.New(d)
		tops, err := j.Origins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, match := range []func(*signalmesh.Signal) bool{nil, func(s *signalmesh.Signal) bool { return len(s.ID)%2 == 0 || s.CauseID() != "" }} {
			want, err := j.Replay(ctx, match)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := streamed(t, j, tops, nil, match, 0)
			if !slices.Equal(got, idsOf(want)) {
				explain(t, j, got, idsOf(want))
				t.Fatalf("seed %d: Stream differs from Replay:\n got %v\nwant %v", seed, got, idsOf(want))
			}
			cut := 1 + r.IntN(len(got)-1)
			head, cur := streamed(t, j, tops, nil, match, cut)
			back, err := journal.ParseCursor(cur.String())
			if err != nil {
				t.Fatal(err)
			}
			rest, _ := streamed(t, j, tops, back, match, 0)
			if all := append(head, rest...); !slices.Equal(all, got) {
				explain(t, j, all, got)
				t.Fatalf("seed %d: cut at %d and resumed, the stream differs", seed, cut)
			}
		}
	}
}

// With Copies, Stream yields every copy of an identity, in Order's order
// of the whole journal; and an origin's top bounds what it reads: the
// stream of each origin's first signals is Order's order of those alone
// (what lies above a top is outside the set, and nothing waits for it).
func TestStreamCopiesAndTops(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 7))
		_, d := retried(t, r, 150)
		j := journal.New(d)
		tops, err := j.Origins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all, _, err := j.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, cut := range []bool{false, true} {
			caps := maps.Clone(tops)
			var want []*signalmesh.Signal
			for o := range caps {
				if cut {
					caps[o] = uint64(r.IntN(int(caps[o]) + 1))
				}
			}
			for _, s := range all {
				if o, q := journal.Place(s); q <= caps[o] {
					want = append(want, s)
				}
			}
			journal.Order(want)
			var got []string
			err := j.Stream(ctx, caps, nil, journal.StreamOptions{Copies: true}, func(st journal.StreamStep) bool {
				if st.Signal != nil {
					got = append(got, st.Signal.ID)
				}
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, idsOf(want)) {
				explain(t, j, got, idsOf(want))
				t.Fatalf("seed %d, cut %v: Stream with copies differs from Order:\n got %v\nwant %v", seed, cut, got, idsOf(want))
			}
		}
	}
}

// Signals given as Extra stream as if journaled: with some signals taken
// out of the journal (entry and index entries) and given as Extra, Stream
// gives what it gives with all of them journaled, copies and their flags
// too, from the start and resumed from a cursor.
func TestStreamExtraIsAsIfJournaled(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 11))
		hist, d := retried(t, r, 150)
		j := journal.New(d)
		tops, err := j.Origins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type step struct {
			id   string
			copy bool
		}
		run := func(extra []*signalmesh.Signal, after journal.Cursor, copies bool) []step {
			var out []step
			err := j.Stream(ctx, tops, after, journal.StreamOptions{Copies: copies, Extra: extra}, func(st journal.StreamStep) bool {
				if st.Signal != nil {
					out = append(out, step{st.Signal.ID, st.Copy})
				}
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		cut := journal.Cursor{}
		for o, top := range tops {
			cut[o] = uint64(r.IntN(int(top) + 1))
		}
		var want [2][2][]step
		for i, after := range []journal.Cursor{nil, cut} {
			for k, copies := range []bool{false, true} {
				want[i][k] = run(nil, after, copies)
			}
		}
		// Take a fifth of the signals out of the journal.
		var extra []*signalmesh.Signal
		for _, s := range hist {
			if r.IntN(5) != 0 {
				continue
			}
			m, err := journal.MetaOf(s)
			if err != nil {
				t.Fatal(err)
			}
			keys := []ds.Key{journal.SignalKey(m.Origin, m.Seq)}
			for _, e := range journal.IndexEntries(m) {
				keys = append(keys, e.Key)
			}
			for _, k := range keys {
				if err := d.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			extra = append(extra, s)
		}
		for i, after := range []journal.Cursor{nil, cut} {
			for k, copies := range []bool{false, true} {
				if got := run(extra, after, copies); !slices.Equal(got, want[i][k]) {
					t.Fatalf("seed %d, cursor %v, copies %v: with %d signals as Extra\n got %v\nwant %v", seed, i == 1, copies, len(extra), got, want[i][k])
				}
			}
		}
	}
}

func TestParseCursorRejects(t *testing.T) {
	good := journal.Cursor{causal.PeerRef("a"): 3, causal.PeerRef("b"): 9}
	back, err := journal.ParseCursor(good.String())
	if err != nil || !maps.Equal(back, good) {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	for _, bad := range []string{"!!", "AA", "AQ", good.String() + "A"} {
		if _, err := journal.ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
}

// FuzzParseCursor: any token parses or fails with ErrCursor, never a
// panic; what parses prints back to the same token.
func FuzzParseCursor(f *testing.F) {
	f.Add(journal.Cursor{causal.PeerRef("a"): 3}.String())
	f.Add("")
	f.Add("AQsAAAAAAAAAAAAAAAAB")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := journal.ParseCursor(s)
		if err != nil {
			return
		}
		if got := c.String(); got != s {
			t.Fatalf("%q parsed and printed as %q", s, got)
		}
	})
}

// explain logs the first place where two replays differ, and what the
// journal says of the two signals there.
func explain(t *testing.T, j *journal.Journal, got, want []string) {
	t.Helper()
	for k := range min(len(got), len(want)) {
		if got[k] == want[k] {
			continue
		}
		for _, id := range []string{got[k], want[k]} {
			cs, _ := j.Copies(context.Background(), id)
			t.Logf("first difference at %d of %d/%d: %s, copies %v", k, len(got), len(want), id, cs)
		}
		return
	}
}
