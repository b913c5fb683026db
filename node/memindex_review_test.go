package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// Review of dbef812: on two in-memory nodes that exchange signals (own
// ones through the put hook, the peer's through gossip and the journal;
// ids shared by two sources; effects of causes on the other node), every
// journaled signal is in the MemIndex, and the MemIndex answers as an
// index written into a store from the journal (IndexEntries of each
// signal) would: nothing is left unindexed or indexed apart from the
// journal.
func TestReviewMemIndexHoldsEveryJournaledSignal(t *testing.T) {
	ctx := context.Background()
	var nodes []*Node
	for range 2 {
		n, err := New(ctx, Config{Mesh: "memindex-review", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if n.memIdx == nil {
			t.Fatal("an in-memory node has no MemIndex")
		}
		nodes = append(nodes, n)
	}
	if err := nodes[1].Connect(ctx, nodes[0].AddrInfo()); err != nil {
		t.Fatal(err)
	}
	const per = 150
	for k, n := range nodes {
		var batch []*signalmesh.Signal
		for i := range per {
			opts := []signalmesh.Option{signalmesh.WithID(fmt.Sprint("shared-", i))} // the other node uses the id too, with its source
			if i > 0 {
				opts = append(opts, signalmesh.WithCauseID(fmt.Sprint("shared-", (i-1)/2)))
			}
			s, err := signalmesh.New("review.x", fmt.Sprint("/node-", k), nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, s)
		}
		if err := n.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		awaitRead(t, "both journals hold everything", func() bool {
			c, _, err := n.JournalDigest(ctx)
			return err == nil && c == 2*per
		})
	}
	for k, n := range nodes {
		all, bad, err := n.jr.All(ctx)
		if err != nil || bad != 0 || len(all) != 2*per {
			t.Fatalf("node %d: All = %d signals, %d bad, %v", k, len(all), bad, err)
		}
		store := dssync.MutexWrap(ds.NewMapDatastore())
		ids := map[string]bool{}
		for _, s := range all {
			m, err := journal.MetaOf(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range journal.IndexEntries(m) {
				if err := store.Put(ctx, e.Key, e.Value); err != nil {
					t.Fatal(err)
				}
			}
			ids[s.ID] = true
		}
		want := journal.NewWithIndex(store, store)
		for id := range ids {
			wc, _ := want.Copies(ctx, id)
			gc, err := n.jr.Copies(ctx, id)
			if err != nil || !slices.Equal(gc, wc) {
				t.Fatalf("node %d: Copies(%s) = %v, %v; the journal's entries say %v", k, id, gc, err, wc)
			}
			we, _ := want.EffectPlaces(ctx, id)
			ge, err := n.jr.EffectPlaces(ctx, id)
			if err != nil || !slices.Equal(ge, we) {
				t.Fatalf("node %d: EffectPlaces(%s) = %v, %v; the journal's entries say %v", k, id, ge, err, we)
			}
		}
		if l := n.memIdx.Len(); l != 2*per {
			t.Fatalf("node %d: the MemIndex holds %d places, the journal %d", k, l, 2*per)
		}
		if got, err := n.Get(ctx, "shared-7"); err != nil || got.ID != "shared-7" {
			t.Fatalf("node %d: Get = %v, %v", k, got, err)
		}
		if effects, err := n.Effects(ctx, "shared-3"); err != nil || len(effects) != 4 { // 7 and 8 of each source
			t.Fatalf("node %d: Effects = %d, %v; want 4", k, len(effects), err)
		}
	}
}
