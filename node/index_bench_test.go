package node

import (
	"context"
	"log/slog"
	"strconv"
	"testing"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh/causal"
)

// BenchmarkIndexLater: the put hook's index entries, queued and written in
// batches, for signals each of which names the previous one as its cause
// (two entries a signal), into a fresh in-memory store every 20,000.
func BenchmarkIndexLater(b *testing.B) {
	const run = 20000
	ids := make([]string, run)
	for i := range ids {
		ids[i] = "0190a6c2-0000-7000-8000-" + strconv.Itoa(100000000000+i)
	}
	origin := causal.PeerRef("12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz")
	var n *Node
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%run == 0 {
			if n != nil {
				n.flushIndex()
			}
			store := dssync.MutexWrap(ds.NewMapDatastore())
			n = &Node{ctx: context.Background(), log: slog.New(slog.DiscardHandler),
				store: store, indexPrefix: "/signalmesh/bench/index", index: namespace.Wrap(store, ds.NewKey("/signalmesh/bench/index"))}
		}
		m := causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: uint64(i%run + 1)}, Source: "/shop/eu-1",
			ID: ids[i%run], Digest: uint64(i)}
		if i%run > 0 {
			m.Cause = ids[i%run-1]
		}
		n.indexLater(m)
		i++
	}
}
