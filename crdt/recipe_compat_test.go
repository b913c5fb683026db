package crdt_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh/crdt"
)

// A block of keys with long prefixes (one run each) has a recipe as large
// as its keys: it must not go with the announcement, which GossipSub would
// drop past its 1 MiB limit (then nobody hears of the head until the next
// write or rebroadcast).
func TestLargeRecipeKeepsAnnouncementSmall(t *testing.T) {
	t.Run("recipes", func(t *testing.T) { bigBlock(t, false) })
	t.Run("control-no-recipe-writer", func(t *testing.T) { bigBlock(t, true) })
}

func bigBlock(t *testing.T, noRecipes bool) {
	ctx := context.Background()
	w := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) {
		p.MaxBatchDeltaSize = 4 << 20
		if noRecipes {
			p.Has = nil // no prefetcher, no recipe writer
		}
	})
	r := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true)
	if err := r.h.Connect(ctx, w.h.Peerstore().PeerInfo(w.h.ID())); err != nil {
		t.Fatal(err)
	}
	if err := w.r.Put(ctx, ds.NewKey("/warm/0000000000000001"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	waitHas(t, r, "/warm/0000000000000001", 20*time.Second) // joined, past the join announcements
	b, err := w.r.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		k := fmt.Sprintf("/big/%04d-%s/%016x", i, strings.Repeat("k", 6000), 1)
		if err := b.Put(ctx, ds.NewKey(k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("commit of a 1.2 MB block (MaxBatchDeltaSize 4 MiB): %v", err)
	}
	k := ds.NewKey(fmt.Sprintf("/big/%04d-%s/%016x", 199, strings.Repeat("k", 6000), 1))
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, _ := r.r.Has(ctx, k); ok {
			t.Logf("arrived: recipes %+v", r.r.Recipes())
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the 1.2 MB block never reached the other replica (recipes %+v)", r.r.Recipes())
			break
		}
	}
	// And what the writer announces next?
	if err := w.r.Put(ctx, ds.NewKey("/after/0000000000000001"), []byte("a")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, _ := r.r.Has(ctx, ds.NewKey("/after/0000000000000001")); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a small put after it never arrived either")
		}
	}
}

// Replicas that do not read recipes (no Value; no Has, so go-ds-crdt
// reads the announcement itself) merge announcements that carry them.
func TestRecipesIgnoredByOtherReaders(t *testing.T) {
	for name, mut := range map[string]func(*crdt.Params){
		"no-value":                              func(p *crdt.Params) {},
		"no-has":                                func(p *crdt.Params) { p.Has = nil },
		"control-no-has-writer-without-recipes": func(p *crdt.Params) { p.Has = nil },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			w := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) {
				if strings.HasPrefix(name, "control") {
					p.Has = nil // no recipe writer
				}
			})
			r := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, mut)
			if err := r.h.Connect(ctx, w.h.Peerstore().PeerInfo(w.h.ID())); err != nil {
				t.Fatal(err)
			}
			if err := w.r.Put(ctx, ds.NewKey("/warm/0000000000000001"), []byte("w")); err != nil {
				t.Fatal(err)
			}
			waitHas(t, r, "/warm/0000000000000001", 20*time.Second)
			writeBatch(t, w, "old", 40, nil, nil)
			waitHas(t, r, "/s/old/0000000000000028", 20*time.Second)
		})
	}
}
