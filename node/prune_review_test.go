package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A peer cut off for longer than the SHORT retention (sensor.**, 1 h: the
// sensor signals below are already past it) returns. Its origin's journal
// is order (no age rule: kept for good) <- sensor <- sensor (head). The
// middle block, all of whose entries left retention, was pruned on the
// only replica that has it; the retained order signal sits in a block
// below it, which the returning peer's walk never reaches: an
// acknowledged signal within retention never arrives there.
func TestReviewPrunedBlockHidesRetainedSignalBelowIt(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	ret := journal.Retention{{Pattern: "sensor.**", MaxAge: time.Hour}}
	nodes := cluster(t, 2, func(_ int, c *node.Config) {
		c.Retention, c.DataDir, c.Params.Prune = ret, t.TempDir(), 100*time.Millisecond
		c.Params.DepWait = 2 * time.Second
	})
	a, b := nodes[0], nodes[1]
	rec := newRecorder()
	if _, err := b.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	cut([]*peerNode{a}, []*peerNode{b})
	eventually(t, 5*time.Second, "the cut", func() bool { return len(a.Host().Network().ConnsToPeer(b.ID())) == 0 })

	order := mustSignal(t, "order.created")
	old := time.Now().Add(-2 * time.Hour)
	batches := [][]*signalmesh.Signal{{order},
		{mustSignal(t, "sensor.x", signalmesh.WithTime(old))},
		{mustSignal(t, "sensor.x", signalmesh.WithTime(old))}}
	for i, batch := range batches {
		if err := a.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, fmt.Sprintf("batch %d journaled on a", i), func() bool {
			st, err := a.Status(ctx)
			return err == nil && st.Journaled >= int64(i+1)
		})
	}
	// a prunes the two sensor values, and no block: the order block lies
	// below them (blocks go from the oldest up).
	eventually(t, 20*time.Second, "a pruned the two sensor signals", func() bool {
		st, err := a.Status(ctx)
		return err == nil && st.Pruned == 2
	})
	if st, err := a.Status(ctx); err != nil || st.PrunedBlocks != 0 {
		t.Fatalf("a deleted %d blocks above a kept one (%v)", st.PrunedBlocks, err)
	}
	heal(t, nodes)
	later := mustSignal(t, "order.paid")
	if err := a.Publish(ctx, later); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the new signal at b (b is live)", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[later.ID] == 1
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec.mu.Lock()
		got := rec.seen[order.ID]
		rec.mu.Unlock()
		_, err := b.JournalGet(ctx, journal.SignalKey(node.PeerRefOf(a.ID()), 1))
		if got == 1 && err == nil {
			return
		}
		if time.Now().After(deadline) {
			st, _ := b.Status(ctx)
			sa, _ := a.Status(ctx)
			t.Fatalf("the retained order signal never reached the returning peer (delivered %d, journal get: %v); a pruned %d entries, %d blocks; b: clock %v, heads %d", got, err, sa.Pruned, sa.PrunedBlocks, st.Clock, st.Heads)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
