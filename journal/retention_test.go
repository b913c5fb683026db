package journal_test

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// The local view of retention: Replay and Stream leave out what is past
// an age or beyond a count or a size, per type pattern, the oldest in
// replay order first; Stream says how many it passed over, and where; a stream resumed
// from a cursor keeps the same view.
func TestRetentionView(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	var want []string
	seq := uint64(0)
	add := func(typ string, age time.Duration, kept bool) {
		seq++
		s, _ := signalmesh.New(typ, "/t", nil, signalmesh.WithTime(now.Add(-age)))
		put(t, d, stamp(t, s, "peer-a", causal.Stamp{Seq: seq, Lamport: seq}))
		if kept {
			want = append(want, s.ID)
		}
	}
	add("sensor.temp", 2*time.Hour, false) // older than an hour
	for i := range 5 {
		add("order.created", time.Duration(10-i)*time.Minute, i >= 3) // the newest 2 of 5
	}
	add("sensor.temp", 30*time.Minute, true)
	add("audit.login", 100*time.Hour, true) // no rule: kept
	add("sensor.temp", -time.Hour, true)    // dated in the future: kept
	var logSize int
	for i := range 4 {
		add("log.line", time.Duration(4-i)*time.Minute, i >= 2) // the newest that fit in 2.5 of their sizes
		b, _ := journal.New(d).At(ctx, causal.PeerRef("peer-a"), seq)
		w, _ := b.MarshalBinary()
		logSize = max(logSize, len(w))
	}

	j := journal.New(d)
	ret := journal.Retention{{Pattern: "sensor.**", MaxAge: time.Hour}, {Pattern: "order.**", MaxCount: 2},
		{Pattern: "log.**", MaxBytes: int64(logSize*5/2 + 1)}}
	if err := ret.Validate(); err != nil {
		t.Fatal(err)
	}
	j.SetRetention(ret, func() time.Time { return now })
	got, err := j.Replay(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idsOf(got), want) {
		t.Fatalf("Replay kept %v, want %v", idsOf(got), want)
	}
	tops, _ := j.Origins(ctx)
	var ids []string
	var cuts []int
	var mid journal.Cursor
	err = j.Stream(ctx, tops, nil, journal.StreamOptions{}, func(st journal.StreamStep) bool {
		cuts = append(cuts, st.Truncated)
		if st.Signal != nil {
			ids = append(ids, st.Signal.ID)
			if len(ids) == 2 {
				mid = maps.Clone(st.Cursor)
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if wantCuts := []int{4, 0, 0, 0, 0, 2, 0}; !slices.Equal(ids, want) || !slices.Equal(cuts, wantCuts) {
		t.Fatalf("Stream gave %v with truncations %v, want %v with %v", ids, cuts, want, wantCuts)
	}
	var rest []string
	if err := j.Stream(ctx, tops, mid, journal.StreamOptions{}, func(st journal.StreamStep) bool {
		rest = append(rest, st.Signal.ID)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rest, want[2:]) {
		t.Fatalf("resumed from a cursor: %v, want %v", rest, want[2:])
	}
}

func TestRetentionValidate(t *testing.T) {
	for _, bad := range []journal.Retention{
		{{Pattern: "a.[", MaxAge: time.Hour}},
		{{Pattern: "a.**", MaxAge: -time.Second}},
		{{Pattern: "a.**"}},
	} {
		if err := bad.Validate(); !errors.Is(err, journal.ErrRetention) {
			t.Errorf("%+v: %v, want ErrRetention", bad, err)
		}
	}
}

// With count and byte rules, a stream cut anywhere and resumed from its
// cursor gives the same view as one stream (the resumed one counts only
// what lies after its cursor).
func TestRetentionResumedIsTheSameView(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 5))
		hist, _ := history(t, r, 150)
		d := dssync.MutexWrap(ds.NewMapDatastore())
		put(t, d, hist...)
		j := journal.New(d)
		j.SetRetention(journal.Retention{{Pattern: "h.**", MaxCount: 40 + r.IntN(60)}}, nil)
		tops, err := j.Origins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		full, _ := streamed(t, j, tops, nil, nil, 0)
		if len(full) < 2 {
			t.Fatalf("seed %d: %d kept", seed, len(full))
		}
		cut := 1 + r.IntN(len(full)-1)
		head, cur := streamed(t, j, tops, nil, nil, cut)
		rest, _ := streamed(t, j, tops, cur, nil, 0)
		if all := append(head, rest...); !slices.Equal(all, full) {
			t.Fatalf("seed %d: cut at %d of %d and resumed: %d kept, want %d", seed, cut, len(full), len(all), len(full))
		}
	}
}
