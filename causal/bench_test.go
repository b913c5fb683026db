package causal

import (
	"strconv"
	"testing"
)

// BenchmarkAddInOrder: signals from 8 origins, round robin, each depending
// on the latest signal of the two previous origins: every Add is ready and
// releases exactly itself.
func BenchmarkAddInOrder(b *testing.B) {
	const origins = 8
	names := make([]string, origins)
	for i := range names {
		names[i] = PeerRef("bench-" + strconv.Itoa(i))
	}
	// ids are made before the timer: the core, not Sprintf, is measured
	const ring = 1 << 16
	ids := make([]string, ring)
	for i := range ids {
		ids[i] = "id-" + strconv.Itoa(i)
	}
	c, err := New[int](Params{Limit: 1000, CauseWait: 100}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		o := i % origins
		seq := uint64(i/origins + 1)
		deps := []Ref{
			{names[(o+origins-1)%origins], seq - boolU(o == 0)},
			{names[(o+origins-2)%origins], seq - boolU(o <= 1)},
		}
		if deps[1].Seq == 0 {
			deps = deps[:0]
		} else if deps[0].Seq == 0 {
			deps = deps[1:]
		}
		m := Meta{Origin: names[o], Stamp: Stamp{Seq: seq, Lamport: uint64(i + 1), Deps: deps},
			Source: "bench", ID: ids[i%ring], Digest: uint64(i)}
		rel, err := c.Add(m, i, int64(i))
		if err != nil || len(rel) != 1 {
			b.Fatalf("Add %v: %d released, %v", m.Ref(), len(rel), err)
		}
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// BenchmarkCatchUpFull: 100,000 signals of one origin offered in reverse
// order to a core with Limit 1,000: the first 1,000 wait, each of the next
// 98,999 takes the place of the highest waiting one (Evicted: the one
// below it is what they wait for) or is refused with ErrFull, the first is
// ready, and the Pull loop reads the journal in sequence to deliver the
// rest. One op is the whole catch-up.
func BenchmarkCatchUpFull(b *testing.B) {
	const n = 100_000
	origin := PeerRef("bench")
	j := newJournal()
	sigs := make([]Meta, n)
	for i := range sigs {
		sigs[i] = Meta{Origin: origin, Stamp: Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 1)},
			Source: "bench", ID: "id-" + strconv.Itoa(i)}
		j.put(sigs[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := New[int](Params{Limit: 1000, Recent: 1 << 12, BloomBits: 1 << 20}, j)
		if err != nil {
			b.Fatal(err)
		}
		full, got := 0, 0
		for i := n - 1; i >= 0; i-- {
			rel, err := c.Add(sigs[i], 0, 0)
			if err == ErrFull {
				full++
			}
			got += len(rel)
		}
		got += len(catchUp(c, j.byRef, 0))
		if full+int(c.Evicted()) != n-1001 || got != n || c.Len() != 0 {
			b.Fatalf("refused %d, evicted %d, released %d, Len %d", full, c.Evicted(), got, c.Len())
		}
	}
}

// BenchmarkFrontier: the stamp base a node publishes after each delivery,
// with 8 origins in the frontier and the node's default MaxDeps (16).
func BenchmarkFrontier(b *testing.B) {
	c, err := New[int](Params{Limit: 1000}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 8 {
		m := Meta{Origin: PeerRef("bench-" + strconv.Itoa(i)), Stamp: Stamp{Seq: 1, Lamport: uint64(i + 1)},
			Source: "bench", ID: "id-" + strconv.Itoa(i)}
		if _, err := c.Add(m, i, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if deps, _, _ := c.Frontier(PeerRef("bench-0"), 16); len(deps) != 7 {
			b.Fatalf("%d deps", len(deps))
		}
	}
}

// BenchmarkAddFreshIDs: as BenchmarkAddInOrder, but every signal has an
// id the core has not seen (a heal, a catch-up): the filter spares the
// identity lookup, and each id goes into the recent ring, pushing out the
// one remembered Params.Recent ids before. At most 1<<20 ops (-benchtime).
func BenchmarkAddFreshIDs(b *testing.B) {
	const origins = 8
	names := make([]string, origins)
	for i := range names {
		names[i] = PeerRef("bench-" + strconv.Itoa(i))
	}
	const n = 1 << 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "0190a6c2-0000-7000-8000-" + strconv.Itoa(100000000000+i)
	}
	c, err := New[int](Params{Limit: 1000, CauseWait: 100}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			b.Fatalf("more than %d ops", n)
		}
		o := i % origins
		seq := uint64(i/origins + 1)
		var deps []Ref
		if i >= origins {
			deps = []Ref{{names[(o+origins-1)%origins], seq - boolU(o == 0)}}
		}
		m := Meta{Origin: names[o], Stamp: Stamp{Seq: seq, Lamport: uint64(i + 1), Deps: deps},
			Source: "bench", ID: ids[i], Digest: uint64(i)}
		rel, err := c.Add(m, i, int64(i))
		if err != nil || len(rel) != 1 {
			b.Fatalf("Add %v: %d released, %v", m.Ref(), len(rel), err)
		}
		i++
	}
}
