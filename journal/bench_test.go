package journal_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// BenchmarkReplayVersusStream: a whole replay of n signals of 4 origins
// (each depending on the previous origin's latest), one op each, by
// Replay (reads every signal, then orders) and by Stream (one signal per
// origin at a time). B/op is what each allocates in all; live-MB is the
// live heap it holds at its largest (Replay: its result; Stream: sampled
// after a GC every 2,000 signals), which for Stream follows the origins,
// for Replay the journal.
func BenchmarkReplayVersusStream(b *testing.B) {
	for _, n := range []int{2000, 20000} {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		peers := []string{"peer-a", "peer-b", "peer-c", "peer-d"}
		seq := map[string]uint64{}
		for i := range n {
			p := peers[i%len(peers)]
			seq[p]++
			st := causal.Stamp{Seq: seq[p], Lamport: uint64(i + 1)}
			if i > 0 {
				q := peers[(i-1)%len(peers)]
				st.Deps = []causal.Ref{{Origin: causal.PeerRef(q), Seq: seq[q]}}
			}
			s, _ := signalmesh.New("bench.e", "/b", make([]byte, 100))
			put(b, d, stamp(b, s, p, st))
		}
		j := journal.New(d)
		ctx := context.Background()
		tops, err := j.Origins(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("Replay/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var live uint64
			for b.Loop() {
				base := liveHeap()
				got, err := j.Replay(ctx, nil)
				if err != nil || len(got) != n {
					b.Fatalf("%d, %v", len(got), err)
				}
				live = max(live, liveHeap()-min(base, liveHeap()))
				runtime.KeepAlive(got)
			}
			b.ReportMetric(float64(live)/(1<<20), "live-MB")
		})
		b.Run(fmt.Sprintf("Stream/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var live uint64
			for b.Loop() {
				base := liveHeap()
				got := 0
				if err := j.Stream(ctx, tops, nil, journal.StreamOptions{}, func(journal.StreamStep) bool {
					if got++; got%2000 == 0 {
						live = max(live, liveHeap()-min(base, liveHeap()))
					}
					return true
				}); err != nil || got != n {
					b.Fatalf("%d, %v", got, err)
				}
			}
			b.ReportMetric(float64(live)/(1<<20), "live-MB")
		})
	}
}

// liveHeap is the heap in use after a GC.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIndexEntries: the keys and index entries the put hook builds
// for each journaled signal that names a cause.
func BenchmarkIndexEntries(b *testing.B) {
	m := causal.Meta{Origin: causal.PeerRef("12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz"), Stamp: causal.Stamp{Seq: 42},
		Cause: "0190a6c2-0000-7000-8000-000000000000", Source: "/shop/eu-1", ID: "0190a6c2-0000-7000-8000-000000000001", Digest: 7}
	b.ReportAllocs()
	for b.Loop() {
		_ = journal.SignalKey(m.Origin, m.Seq)
		_ = journal.IndexEntries(m)
	}
}

// BenchmarkMetaOf: what the put hook reads of each journaled signal it
// decoded (its stamp, and the digest of its content).
func BenchmarkMetaOf(b *testing.B) {
	s, err := signalmesh.New("order.line.created", "/shop/eu-1", []byte(`{"line":1}`),
		signalmesh.WithCauseID("0190a6c2-0000-7000-8000-000000000000"),
		signalmesh.WithExtension("tenant", "eu"),
		signalmesh.WithExtension(signalmesh.ExtPeer, "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz"),
		signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: 42, Lamport: 99}.Format()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := journal.MetaOf(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopiesInMemory: Copies (what Get, the causal core's identity
// checks and a publish's retry check read) on a journal of n signals held
// in memory, with its index in the store (a MapDatastore: a prefix query
// visits and copies every key) and in a MemIndex.
func BenchmarkCopiesInMemory(b *testing.B) {
	ctx := context.Background()
	origin := causal.PeerRef("peer-a")
	for _, n := range []int{10000, 100000} {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		mem := journal.NewMemIndex()
		for i := range n {
			m := causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: uint64(i + 1)}, Source: "/b", ID: fmt.Sprint("id-", i)}
			for _, e := range journal.IndexEntries(m) {
				if err := d.Put(ctx, e.Key, e.Value); err != nil {
					b.Fatal(err)
				}
			}
			mem.Add(m)
		}
		for _, c := range []struct {
			name string
			j    *journal.Journal
		}{{"store", journal.New(d)}, {"mem", journal.NewWithMemIndex(d, mem)}} {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if cs, err := c.j.Copies(ctx, fmt.Sprint("id-", i%n)); err != nil || len(cs) != 1 {
						b.Fatal(cs, err)
					}
					i += 7919
				}
			})
		}
	}
}

// BenchmarkMemIndexAdd: MemIndex.Add of a signal that names a cause (its
// id and effects entries), into a fresh index every 20,000 signals.
func BenchmarkMemIndexAdd(b *testing.B) {
	const run = 20000
	ids := make([]string, run)
	for i := range ids {
		ids[i] = fmt.Sprint("0190a6c2-0000-7000-8000-", 100000000000+i)
	}
	origin := causal.PeerRef("12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz")
	var mem *journal.MemIndex
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%run == 0 {
			mem = journal.NewMemIndex()
		}
		m := causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: uint64(i%run + 1)}, Source: "/shop/eu-1", ID: ids[i%run], Digest: uint64(i)}
		if i%run > 0 {
			m.Cause = ids[i%run-1]
		}
		mem.Add(m)
		i++
	}
}
