package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

// Receivers that got a journal batch's signals by gossip build its block
// from them (the recipe in the head's announcement) instead of fetching
// it over bitswap, and the journals still converge.
func TestJournalBlocksBuiltFromGossip(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 3, nil)
	ctx := context.Background()
	eventually(t, 20*time.Second, "a GossipSub mesh between the peers", func() bool {
		for _, n := range nodes {
			if st, err := n.Status(ctx); err != nil || st.Mesh < 2 {
				return false
			}
		}
		return true
	})
	rec := newRecorder()
	if _, err := nodes[1].Subscribe("recipe.*", rec.handle); err != nil {
		t.Fatal(err)
	}
	const total = 200
	for i := range total {
		if err := nodes[0].Publish(ctx, mustSignal(t, "recipe.tick", signalmesh.WithSubject(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			time.Sleep(20 * time.Millisecond) // journal batches of a few signals each, as a steady publisher makes
		}
	}
	journalsConverge(t, nodes, total, 30*time.Second)
	for i, n := range nodes[1:] {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("node %d: blocks rebuilt %d, fetched %d, rejected %v", i+1, st.BlocksRebuilt, st.BlocksFetched, st.Rejected)
		if st.BlocksRebuilt == 0 || st.Rejected["block_recipe"] != 0 {
			t.Errorf("node %d: %d journal blocks built from gossip (fetched %d), %d recipes rejected; want some built and none rejected",
				i+1, st.BlocksRebuilt, st.BlocksFetched, st.Rejected["block_recipe"])
		}
	}
}
