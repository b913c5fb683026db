package journal_test

import (
	"context"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
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
