package journal_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// A MemIndex answers Copies and EffectPlaces as the index entries in a
// store do: random signals (ids shared by sources, places added twice and
// out of order, causes with effects from several origins, hostile reuse of
// a place with other content) into both, every id and cause read back and
// compared, after each of several rounds of additions.
func TestMemIndexAnswersAsTheStoreIndex(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 7))
		d := dssync.MutexWrap(ds.NewMapDatastore())
		mem := journal.NewMemIndex()
		fromStore, fromMem := journal.NewWithIndex(d, d), journal.NewWithMemIndex(d, mem)
		origins := []string{causal.PeerRef("peer-a"), causal.PeerRef("peer-b"), causal.PeerRef("peer-c")}
		ids := make([]string, 40)
		for i := range ids {
			ids[i] = fmt.Sprint("id-", i)
		}
		for round := range 5 {
			for range 200 {
				m := causal.Meta{Origin: origins[r.IntN(len(origins))], Stamp: causal.Stamp{Seq: uint64(1 + r.IntN(100))},
					Source: []string{"/a", "/b"}[r.IntN(2)], ID: ids[r.IntN(len(ids))], Digest: r.Uint64N(4)}
				if r.IntN(2) == 0 {
					m.Cause = ids[r.IntN(len(ids))]
				}
				for _, e := range journal.IndexEntries(m) {
					if err := d.Put(ctx, e.Key, e.Value); err != nil {
						t.Fatal(err)
					}
				}
				mem.Add(m)
			}
			for _, id := range ids {
				want, err := fromStore.Copies(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				got, err := fromMem.Copies(ctx, id)
				if err != nil || !slices.Equal(got, want) {
					t.Fatalf("seed %d round %d: Copies(%s)\n mem   %v, %v\n store %v", seed, round, id, got, err, want)
				}
				wantE, err := fromStore.EffectPlaces(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				gotE, err := fromMem.EffectPlaces(ctx, id)
				if err != nil || !slices.Equal(gotE, wantE) {
					t.Fatalf("seed %d round %d: EffectPlaces(%s)\n mem   %v, %v\n store %v", seed, round, id, gotE, err, wantE)
				}
			}
		}
		n := 0
		for _, id := range ids {
			cs, _ := fromStore.Copies(ctx, id)
			n += len(cs)
		}
		if mem.Len() != n {
			t.Fatalf("seed %d: Len = %d, the store holds %d", seed, mem.Len(), n)
		}
	}
}

// What Copies returns is the caller's: changing it does not change the
// index, and readers and writers may run at once (run with -race).
func TestMemIndexConcurrentAndCopied(t *testing.T) {
	ctx := context.Background()
	mem := journal.NewMemIndex()
	j := journal.NewWithMemIndex(dssync.MutexWrap(ds.NewMapDatastore()), mem)
	origin := causal.PeerRef("peer-a")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				mem.Add(causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: uint64(4*i + w + 1)}, ID: "shared", Cause: "root", Source: "/s"})
				if _, err := j.Copies(ctx, "shared"); err != nil {
					t.Error(err)
				}
				if _, err := j.EffectPlaces(ctx, "root"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	cs, _ := j.Copies(ctx, "shared")
	es, _ := j.EffectPlaces(ctx, "root")
	if len(cs) != 2000 || len(es) != 2000 {
		t.Fatalf("%d copies, %d effects; want 2000 of each", len(cs), len(es))
	}
	for i := 1; i < len(es); i++ {
		if es[i-1].Seq >= es[i].Seq {
			t.Fatalf("effects out of order at %d: %v then %v", i, es[i-1], es[i])
		}
	}
	cs[0].Source, es[0].Seq = "changed", 999999
	cs2, _ := j.Copies(ctx, "shared")
	es2, _ := j.EffectPlaces(ctx, "root")
	if cs2[0].Source != "/s" || es2[0].Seq != 1 {
		t.Fatalf("a caller's change reached the index: %v, %v", cs2[0], es2[0])
	}
}
