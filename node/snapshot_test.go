package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A hub whose journal holds 1,000 signals past retention and 250 within:
// publishes them in calls of 50.
func hubWithHistory(t *testing.T, ret journal.Retention) (*peerNode, *signalmesh.Signal) {
	t.Helper()
	ctx := context.Background()
	hub := cluster(t, 1, func(_ int, c *node.Config) { c.Retention = ret })[0]
	old := time.Now().Add(-2 * time.Hour)
	var expired *signalmesh.Signal
	for i := 0; i < 25; i++ {
		batch := make([]*signalmesh.Signal, 50)
		for j := range batch {
			if i < 20 {
				batch[j] = mustSignal(t, "old.x", signalmesh.WithTime(old))
				expired = batch[j]
			} else {
				batch[j] = mustSignal(t, "new.x")
			}
		}
		if err := hub.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the hub's journal", func() bool {
		c, _, err := hub.JournalDigest(ctx)
		return err == nil && c == 1250
	})
	return hub, expired
}

// A fresh node with SnapshotJoin starts with the hub's retained signals in
// its journal, reads none of the 1,000 past retention from journal blocks,
// and is current: what the hub publishes next reaches it, also an effect
// whose cause left retention (not held CauseWait for it). Without the
// option the same join reads all 1,250 from the blocks.
func TestSnapshotJoinBringsWhatIsRetained(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	ret := journal.Retention{{Pattern: "**", MaxAge: time.Hour}}
	hub, expired := hubWithHistory(t, ret)
	for _, snap := range []bool{true, false} {
		t.Run(fmt.Sprint("snapshot=", snap), func(t *testing.T) {
			cfg := node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
				Bootstrap: []peer.AddrInfo{hub.AddrInfo()}, SnapshotJoin: snap, Retention: ret,
				DataDir: t.TempDir(), Logger: testLogger(t)}
			j, err := node.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := j.Close(); err != nil {
					t.Error(err)
				}
			}()
			if snap {
				if c, _, err := j.JournalDigest(ctx); err != nil || c != 250 {
					t.Fatalf("journal after a snapshot join: %d entries (%v), want the 250 retained", c, err)
				}
			}
			rec := newRecorder()
			if _, err := j.Subscribe("**", rec.handle); err != nil {
				t.Fatal(err)
			}
			effect := mustSignal(t, "new.effect", signalmesh.WithCause(expired))
			fresh := mustSignal(t, "new.y")
			if err := hub.Publish(ctx, fresh, effect); err != nil {
				t.Fatal(err)
			}
			both := func() (bool, string) {
				rec.mu.Lock()
				defer rec.mu.Unlock()
				return rec.seen[effect.ID] == 1 && rec.seen[fresh.ID] == 1, fmt.Sprintf("effect %d, fresh %d, arrived %d", rec.seen[effect.ID], rec.seen[fresh.ID], j.Arrived())
			}
			deadline := time.Now().Add(30 * time.Second)
			for ok, what := both(); !ok; ok, what = both() {
				if time.Now().After(deadline) {
					st, _ := j.Status(ctx)
					t.Fatalf("the two new signals did not come in 30 s: %s; buffered %d", what, st.Buffered)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if snap {
				if got := j.Arrived(); got > 2 {
					t.Fatalf("the joiner read %d entries from journal blocks, want only the 2 new ones", got)
				}
				// Reopened, it is the same node: its journal, and an
				// effect of another cause that left before the join is
				// not held for it.
				if err := j.Close(); err != nil {
					t.Fatal(err)
				}
				if j, err = node.New(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				if c, _, err := j.JournalDigest(ctx); err != nil || c != 252 {
					t.Fatalf("journal after the reopen: %d entries (%v), want 252", c, err)
				}
				rec := newRecorder()
				if _, err := j.Subscribe("**", rec.handle); err != nil {
					t.Fatal(err)
				}
				again := mustSignal(t, "new.effect", signalmesh.WithCauseID(expired.ID))
				if err := hub.Publish(ctx, again); err != nil {
					t.Fatal(err)
				}
				eventually(t, 30*time.Second, "an effect of a cause gone before the join, after a reopen", func() bool {
					rec.mu.Lock()
					defer rec.mu.Unlock()
					return rec.seen[again.ID] == 1
				})
				return
			}
			eventually(t, 30*time.Second, "the whole journal", func() bool { return j.Arrived() >= 1252 })
		})
	}
}

// A snapshot from a peer that does not serve one (or fails) leaves the
// join to the DAG walk: the joiner still gets every signal.
func TestSnapshotJoinFallsBackToTheWalk(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	hub, _ := hubWithHistory(t, nil)
	// The first bootstrap peer serves no snapshot: a node of another mesh.
	other, err := node.New(ctx, node.Config{Mesh: hub.Mesh() + "-other", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	j, err := node.New(ctx, node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{other.AddrInfo()}, SnapshotJoin: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Connect(ctx, hub.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the whole journal by the walk", func() bool {
		c, _, err := j.JournalDigest(ctx)
		return err == nil && c == 1250
	})
}

// Signals past retention leave the disk of every replica that delivered
// them: their entries, their blocks (a round prunes the blocks all of
// whose entries are past retention), their index entries; the retained
// stay. An effect published later naming a pruned cause is not held for
// it; one naming a cause that never was still waits.
func TestPruneDeletesWhatLeftRetention(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	ret := journal.Retention{{Pattern: "**", MaxAge: time.Hour}}
	nodes := cluster(t, 2, func(_ int, c *node.Config) {
		c.Retention, c.DataDir, c.Params.Prune = ret, t.TempDir(), 50*time.Millisecond
		c.Params.CauseWait = time.Minute
	})
	old := time.Now().Add(-2 * time.Hour)
	var cause *signalmesh.Signal
	for i := 0; i < 21; i++ {
		batch := make([]*signalmesh.Signal, 50)
		for j := range batch {
			if i < 20 {
				batch[j] = mustSignal(t, "old.x", signalmesh.WithTime(old))
				cause = batch[j]
			} else {
				batch[j] = mustSignal(t, "new.x")
			}
		}
		if i == 20 {
			// The last old ones in their own journal block.
			eventually(t, 20*time.Second, "the old ones journaled", func() bool {
				return nodes[0].Arrived() >= 1000 // (some may be pruned already)
			})
		}
		if err := nodes[0].Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	for i, nd := range nodes {
		eventually(t, 30*time.Second, fmt.Sprintf("node %d pruned", i), func() bool {
			c, _, err := nd.JournalDigest(ctx)
			st, _ := nd.Status(ctx)
			return err == nil && c == 50 && st.PrunedBlocks > 0
		})
		st, err := nd.Status(ctx)
		if err != nil || st.Pruned != 1000 || st.PrunedBlocks == 0 {
			t.Fatalf("node %d: pruned %d entries in %d blocks (%v), want the 1,000 past retention", i, st.Pruned, st.PrunedBlocks, err)
		}
		if got, err := nd.Effects(ctx, cause.ID); err != nil || len(got) != 0 {
			t.Fatalf("node %d: Effects of a pruned cause: %d (%v)", i, len(got), err)
		}
	}
	rec := newRecorder()
	if _, err := nodes[1].Subscribe("new.**", rec.handle); err != nil {
		t.Fatal(err)
	}
	effect := mustSignal(t, "new.effect", signalmesh.WithCause(cause))
	if err := nodes[0].Publish(ctx, effect); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the effect of a pruned cause", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.seen[effect.ID] == 1
	})
	// Not every unknown cause counts as pruned.
	never := mustSignal(t, "new.effect", signalmesh.WithCauseID("never-published"))
	if err := nodes[0].Publish(ctx, never); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the effect of a cause that never was, held", func() bool {
		st, err := nodes[1].Status(ctx)
		return err == nil && st.Buffered == 1
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.seen[never.ID] != 0 {
		t.Fatal("an effect whose cause never was was delivered at once")
	}
}

// A node that pruned and then stopped uncleanly starts from its last
// checkpoint: it does not wait for what it pruned, and hands its new
// subscriber only what is new.
func TestPrunedNodeCrashRestart(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	ret := journal.Retention{{Pattern: "**", MaxAge: time.Hour}}
	hub, _ := hubWithHistory(t, ret)
	cfg := node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []peer.AddrInfo{hub.AddrInfo()},
		Retention: ret, DataDir: t.TempDir(), Logger: testLogger(t), Params: node.Params{Prune: 50 * time.Millisecond}}
	j, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	eventually(t, 30*time.Second, "the joiner's journal pruned", func() bool {
		c, _, err := j.JournalDigest(ctx)
		st, _ := j.Status(ctx)
		return err == nil && c == 250 && st.Pruned == 1000
	})
	if err := j.CloseAsCrash(); err != nil {
		t.Fatal(err)
	}
	if j, err = node.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rec := newRecorder()
	if _, err := j.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	fresh := mustSignal(t, "new.after-crash")
	if err := hub.Publish(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		got := rec.seen[fresh.ID]
		rec.mu.Unlock()
		if got == 1 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := j.Status(ctx)
			t.Fatalf("a new signal did not come within 20 s of the crash restart: buffered %d, missing %v, clock %v", st.Buffered, st.Missing, st.Clock)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 {
		t.Fatalf("after the crash restart the subscriber got %d signals, want only the new one", len(rec.got))
	}
}
