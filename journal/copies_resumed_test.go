package journal_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// A retried event journaled at two places whose first copy is past a count
// rule and whose second is retained: Replay (retain, then Unique) keeps the
// second, and so does Stream from the start (the filter never saw the
// first, passed over). Resumed from a cursor, Stream asks the index, finds
// the first copy at or before its cursor (passed over, not yielded) and
// leaves the event out: the backlog of a resumed named subscription (or
// StartAfter) never hands it over.
func TestStreamResumedKeepsCopyOfOnePassedOver(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	other, _ := signalmesh.New("other.x", "/o", 0)
	put(t, d, stamp(t, other, "peer-c", causal.Stamp{Seq: 1, Lamport: 1}))
	x, _ := signalmesh.New("t.x", "/src", 1, signalmesh.WithID("retried"))
	a := stamp(t, x.Clone(), "peer-a", causal.Stamp{Seq: 1, Lamport: 2})
	b := stamp(t, x.Clone(), "peer-b", causal.Stamp{Seq: 1, Lamport: 3})
	put(t, d, a, b)
	j := journal.New(d)
	j.SetRetention(journal.Retention{{Pattern: "t.**", MaxCount: 1}}, time.Now)
	tops, err := j.Origins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := j.Replay(ctx, func(s *signalmesh.Signal) bool { return s.Type == "t.x" })
	if err != nil {
		t.Fatal(err)
	}
	run := func(after journal.Cursor, copies bool) (ids []string, truncated int) {
		err := j.Stream(ctx, tops, after, journal.StreamOptions{Copies: copies, Match: func(s *signalmesh.Signal) bool { return s.Type == "t.x" }}, func(st journal.StreamStep) bool {
			truncated += st.Truncated
			if st.Signal != nil {
				ids = append(ids, st.Signal.ID)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	fromStart, tr0 := run(nil, false)
	resumed, tr1 := run(journal.Cursor{causal.PeerRef("peer-c"): 1}, false)
	t.Logf("replay %d signal(s); from the start %v (truncated %d); resumed %v (truncated %d)", len(replay), fromStart, tr0, resumed, tr1)
	if !slices.Equal(fromStart, resumed) {
		t.Fatalf("the retained copy of a retried event: from the start %v, resumed past an unrelated origin %v", fromStart, resumed)
	}
}

// A retried event's first copy (peer-a:1) is past a count rule, its
// second (peer-b:1) retained; peer-a:2 lies between them. One stream from
// the start yields [a:2, b:1]. Cut after a:2 and resumed, the copy a:1 at
// or before the cursor counts as passed (it may have been handed before
// the cut), so b:1 is left out; with ResumeCopies the resumed stream
// yields it, for a caller that knows what it handled (a named
// subscription's handled set).
func TestStreamResumeCopies(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	other, _ := signalmesh.New("other.x", "/o", 0)
	put(t, d, stamp(t, other, "peer-c", causal.Stamp{Seq: 1, Lamport: 1}))
	x, _ := signalmesh.New("t.x", "/src", 1, signalmesh.WithID("retried"))
	a1 := stamp(t, x.Clone(), "peer-a", causal.Stamp{Seq: 1, Lamport: 2})
	y, _ := signalmesh.New("t.y", "/src", 2, signalmesh.WithID("between"))
	a2 := stamp(t, y, "peer-a", causal.Stamp{Seq: 2, Lamport: 3})
	b1 := stamp(t, x.Clone(), "peer-b", causal.Stamp{Seq: 1, Lamport: 4})
	put(t, d, a1, a2, b1)
	j := journal.New(d)
	j.SetRetention(journal.Retention{{Pattern: "t.x", MaxCount: 1}}, time.Now)
	tops, err := j.Origins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	match := func(s *signalmesh.Signal) bool { return s.Type != "other.x" }
	full, _ := streamed(t, j, tops, nil, match, 0)
	if want := []string{"between", "retried"}; !slices.Equal(full, want) {
		t.Fatalf("from the start %v, want %v", full, want)
	}
	head, cur := streamed(t, j, tops, nil, match, 1)
	for _, resume := range []bool{false, true} {
		var rest []string
		err := j.Stream(ctx, tops, cur, journal.StreamOptions{Match: match, ResumeCopies: resume}, func(st journal.StreamStep) bool {
			if st.Signal != nil {
				rest = append(rest, st.Signal.ID)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		want := full[1:]
		if !resume {
			want = nil
		}
		if !slices.Equal(rest, want) {
			t.Fatalf("cut after %v, resumed (ResumeCopies %v): %v, want %v", head, resume, rest, want)
		}
	}
}

// An entry that decodes but is not at its place is no signal: the count
// of a retention rule leaves it out, as the stream's walk and Replay do.
func TestStreamCountsNoMisplacedEntry(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	chain(t, d, 3)
	bad, _ := signalmesh.New("t.x", "/src", 9)
	bad = stamp(t, bad, "peer-b", causal.Stamp{Seq: 7, Lamport: 9})
	raw, err := bad.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, journal.SignalKey(causal.PeerRef("peer-b"), 1), raw); err != nil { // not its place
		t.Fatal(err)
	}
	j := journal.New(d)
	j.SetRetention(journal.Retention{{Pattern: "t.**", MaxCount: 2}}, time.Now)
	tops, err := j.Origins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := j.Replay(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := streamed(t, j, tops, nil, nil, 0)
	if !slices.Equal(full, idsOf(replay)) || len(full) != 2 {
		t.Fatalf("stream from the start %v, Replay %v, want the newest 2", full, idsOf(replay))
	}
}

// errOnce fails the first index query for one id.
type errOnce struct {
	ds.Batching
	prefix string
	done   bool
}

func (e *errOnce) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if !e.done && strings.HasPrefix(q.Prefix, e.prefix) {
		e.done = true
		return nil, errors.New("injected")
	}
	return e.Batching.Query(ctx, q)
}

// A stream that fails leaves the cursor of its last step where that step
// left it: a stream resumed from it yields what the failed one had picked
// and not yielded, and the truncations it had passed, counted again.
func TestStreamErrorLeavesTheCursorAtTheLastStep(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	sigs := chain(t, d, 6)
	// The index directory of the fourth signal's id: the stream asks it
	// for copies (resumed from a cursor) after picking it.
	prefix := strings.TrimSuffix(journal.IndexKey(sigs[3].ID, causal.PeerRef("peer-a"), 4).String(), "/"+causal.PeerRef("peer-a")+".0000000000000004")
	e := &errOnce{Batching: d, prefix: prefix}
	j := journal.New(e)
	tops, err := j.Origins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var last journal.Cursor
	start := journal.Cursor{causal.PeerRef("peer-a"): 1}
	err = j.Stream(ctx, tops, start, journal.StreamOptions{}, func(st journal.StreamStep) bool {
		got = append(got, st.Signal.ID)
		last = st.Cursor // live: where the stream is
		return true
	})
	if err == nil || !e.done {
		t.Fatalf("the stream did not fail (err %v)", err)
	}
	if len(got) != 2 || last[causal.PeerRef("peer-a")] != 3 {
		t.Fatalf("failed after %d signals with its cursor at %v, want 2 and 3", len(got), last)
	}
	rest, _ := streamed(t, j, tops, maps.Clone(last), nil, 0)
	if want := idsOf(sigs[3:]); !slices.Equal(rest, want) {
		t.Fatalf("resumed after the failure: %v, want %v", rest, want)
	}
}

// chain journals n signals of type t.x that peer-a published one after
// the other, and returns them.
func chain(t *testing.T, d ds.Datastore, n int) []*signalmesh.Signal {
	t.Helper()
	var sigs []*signalmesh.Signal
	for i := range n {
		s, _ := signalmesh.New("t.x", "/src", i)
		sigs = append(sigs, stamp(t, s, "peer-a", causal.Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 1)}))
	}
	put(t, d, sigs...)
	return sigs
}
