package node

import (
	"context"
	"log/slog"
	"strconv"
	"testing"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/router"
)

// BenchmarkOfferJournaled: the loop's work for each signal of a heal, read
// from the journal in order (8 origins, each signal naming the previous
// origin's last): offered to the core, released at once, settled in the
// fresh set, the stamp base published. At most 1<<18 ops (-benchtime).
func BenchmarkOfferJournaled(b *testing.B) {
	const origins, n = 8, 1 << 18
	refs := make([]string, origins)
	for i := range refs {
		refs[i] = causal.PeerRef("12D3KooWBench" + strconv.Itoa(i))
	}
	sigs := make([]*signalmesh.Signal, n)
	metas := make([]causal.Meta, n)
	for i := range sigs {
		o, seq := i%origins, uint64(i/origins+1)
		s, err := signalmesh.New("bench.healed", "/bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		sigs[i] = s
		m := causal.Meta{Origin: refs[o], Stamp: causal.Stamp{Seq: seq, Lamport: uint64(i + 1)}, Source: s.Source, ID: s.ID, Digest: uint64(i)}
		if i >= origins {
			p := (o + origins - 1) % origins
			m.Deps = []causal.Ref{{Origin: refs[p], Seq: seq - boolU(o == 0)}}
		}
		metas[i] = m
	}
	core, err := causal.New[*signalmesh.Signal](causal.Params{Limit: 1000, CauseWait: 1e9}, nil)
	if err != nil {
		b.Fatal(err)
	}
	nd := &Node{ctx: context.Background(), log: slog.New(slog.DiscardHandler), core: core,
		fresh: newFreshSet(1<<16, 1024), journalRefs: map[causal.Ref]struct{}{}, subs: router.New[*Subscription](),
		volatile: true, selfRef: causal.PeerRef("12D3KooWSelf")}
	nd.p.MaxDeps = 16
	if err := nd.m.init(nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			b.Fatalf("more than %d ops", n)
		}
		if err := nd.offerJournaled(metas[i], sigs[i]); err != nil {
			b.Fatalf("offer %d: %v", i, err)
		}
		i++
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
