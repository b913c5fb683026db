package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// An in-memory node (no DataDir) prunes too (Params.Prune, or a quarter
// of the age limit by default), but the pruner deletes index entries only
// from a store index ("n.memIdx == nil"): the MemIndex keeps an entry per
// pruned signal for good, so memory follows everything ever published.
func TestReviewPruneLeavesMemIndexEntries(t *testing.T) {
	ctx := context.Background()
	n, err := New(ctx, Config{Mesh: "prune-memindex-review", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler),
		Retention: journal.Retention{{Pattern: "**", MaxAge: time.Hour}}, Params: Params{Prune: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	old := time.Now().Add(-2 * time.Hour)
	batch := make([]*signalmesh.Signal, 200)
	for i := range batch {
		if batch[i], err = signalmesh.New("old.x", "/test", nil, signalmesh.WithTime(old)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Publish(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	awaitRead(t, "the 200 old signals pruned", func() bool {
		st, err := n.Status(ctx)
		c, _, _ := n.JournalDigest(ctx)
		return err == nil && st.Pruned == 200 && c == 0
	})
	if got := n.memIdx.Len(); got != 0 {
		t.Fatalf("after pruning all 200 signals the in-memory index still holds %d places", got)
	}
}
