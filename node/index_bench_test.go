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

// BenchmarkIndexLaterOneCause: signals that all name one cause (its
// effects directory holds half of every batch), with the put hooks' next
// 1,000 entries queued while each batch is committed (go-ds-crdt's workers
// go on merging meanwhile), so the directory still holds the next batch's
// entries when a batch's leave the queued view. An op is a batch (512
// signals); into a fresh in-memory store every 20 batches.
func BenchmarkIndexLaterOneCause(b *testing.B) {
	origin := causal.PeerRef("12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz")
	var n *Node
	seq := uint64(0)
	next := func() causal.Meta {
		seq++
		return causal.Meta{Origin: origin, Stamp: causal.Stamp{Seq: seq}, Source: "/shop/eu-1",
			ID: "0190a6c2-0000-7000-8000-" + strconv.FormatUint(100000000000+seq, 10), Cause: "the-cause", Digest: seq}
	}
	var store *commitHookStore
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%20 == 0 {
			if n != nil {
				store.onCommit = nil
				n.flushIndex()
			}
			store = &commitHookStore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
			n = &Node{ctx: context.Background(), log: slog.New(slog.DiscardHandler),
				store: store, indexPrefix: "/signalmesh/bench/index", index: namespace.Wrap(store, ds.NewKey("/signalmesh/bench/index"))}
			store.onCommit = func() {
				for range 500 { // 1,000 entries: fewer than a batch
					n.indexLater(next())
				}
			}
		}
		for range 512 {
			n.indexLater(next())
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq), "ns/signal")
}
