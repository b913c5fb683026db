package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// Review: a node that joined from a snapshot and then stops uncleanly (a
// crash: no reopen state) replays its journal from each origin's first
// sequence (restore, pullStep). The snapshot left out the signals past
// retention, so that replay stops at once at each origin's first missing
// sequence: the core stays at 0 for the hub, the hub's next signals wait
// DepWait (1 min) for 1..1250 and the retained ones come back as live
// deliveries. A node that joined by the walk has every entry and is fine.
func TestReviewSnapshotJoinerCrashRestart(t *testing.T) {
	checkLeaks(t)
	ret := journal.Retention{{Pattern: "**", MaxAge: time.Hour}}
	hub, _ := hubWithHistory(t, ret)
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprint("snapshot=", snap), func(t *testing.T) { crashRestart(t, hub, ret, snap) })
	}
}

func crashRestart(t *testing.T, hub *peerNode, ret journal.Retention, snap bool) {
	ctx := context.Background()
	cfg := node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{hub.AddrInfo()}, SnapshotJoin: snap, Retention: ret,
		DataDir: t.TempDir(), Logger: testLogger(t)}
	j, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	want, _, err := hub.JournalDigest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap {
		want -= 1000 // past retention
	}
	eventually(t, 30*time.Second, "the joiner's journal", func() bool {
		c, _, err := j.JournalDigest(ctx)
		return err == nil && c == want
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec.mu.Lock()
		got, all := rec.seen[fresh.ID], len(rec.got)
		rec.mu.Unlock()
		if got == 1 {
			if all != 1 {
				t.Fatalf("after the crash restart the subscriber got %d signals, want only the new one", all)
			}
			return
		}
		if time.Now().After(deadline) {
			st, _ := j.Status(ctx)
			t.Fatalf("a new signal of the hub did not come within 20 s of a crash restart: %s",
				fmt.Sprintf("buffered %d, got %d, missing %v", st.Buffered, all, st.Missing))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
