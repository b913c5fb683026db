package journal_test

import (
	"context"
	"fmt"
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
// origin at a time). B/op is what each allocates in all; the live memory
// of Stream follows the origins, Replay's the journal.
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
			for b.Loop() {
				if got, err := j.Replay(ctx, nil); err != nil || len(got) != n {
					b.Fatalf("%d, %v", len(got), err)
				}
			}
		})
		b.Run(fmt.Sprintf("Stream/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got := 0
				if err := j.Stream(ctx, tops, nil, journal.StreamOptions{}, func(journal.StreamStep) bool { got++; return true }); err != nil || got != n {
					b.Fatalf("%d, %v", got, err)
				}
			}
		})
	}
}
