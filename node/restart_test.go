package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A peer on disk is closed mid-stream and reopened on its data directory:
// nothing it acknowledged is lost, and its persistent subscription resumes
// without handling anything twice.
func TestRestartResumes(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 1 {
			c.DataDir = dir
		}
	})
	src, disk := nodes[0], nodes[1]
	rec := newRecorder()
	sub, err := disk.Subscribe("feed.**", rec.handle, node.WithName("audit"))
	if err != nil {
		t.Fatal(err)
	}
	// The disk peer publishes its own signals, acknowledged before the stop.
	var own []*signalmesh.Signal
	for i := 0; i < 50; i++ {
		own = append(own, mustSignal(t, "feed.local", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	if err := disk.Publish(ctx, own...); err != nil {
		t.Fatal(err)
	}
	// The other peer publishes a stream; the disk peer stops in the middle.
	var sent atomic.Int64
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if err := src.Publish(ctx, mustSignal(t, "feed.remote", signalmesh.WithSubject(fmt.Sprint(i)))); err != nil {
				t.Error(err)
				return
			}
			sent.Add(1)
		}
	}
	publish(0, 300)
	eventually(t, 20*time.Second, "some of the stream handled", func() bool { return rec.count() >= 100 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := disk.Close(); err != nil {
		t.Fatal(err)
	}
	handledBefore := rec.count()
	publish(300, 600) // while the disk peer is down

	reopened, err := node.New(ctx, node.Config{Mesh: "", DataDir: dir})
	if err == nil {
		reopened.Close()
		t.Fatal("empty mesh name accepted")
	}
	cfg := node.Config{Mesh: src.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	reopened, err = node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if reopened.ID() != disk.ID() {
		t.Fatalf("identity not persisted: %s then %s", disk.ID(), reopened.ID())
	}
	for _, s := range own {
		if _, err := reopened.Get(ctx, s.ID); err != nil {
			t.Fatalf("acknowledged signal %s lost: %v", s.ID, err)
		}
	}
	if _, err := reopened.Subscribe("feed.**", rec.handle, node.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	if err := reopened.Connect(ctx, src.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	publish(600, 700)
	want := 50 + 700
	eventually(t, 60*time.Second, "the subscription caught up", func() bool { return rec.count() >= want })
	rec.mu.Lock()
	for id, c := range rec.seen {
		if c != 1 {
			t.Errorf("%s handled %d times", id, c)
		}
	}
	distinct := len(rec.seen)
	rec.mu.Unlock()
	if distinct != want {
		t.Fatalf("handled %d distinct signals, want %d (%d before the restart)", distinct, want, handledBefore)
	}
	t.Logf("handled %d before the restart, %d after, none twice", handledBefore, want-handledBefore)
	if err := reopened.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}

// A node's own signals can reach its journal before their causes do (the
// causes came by gossip; their deltas had not been fetched): after a restart
// it must still number its next signals after them. Before the fix it
// reused their numbers, and every peer dropped the new signals as
// duplicates (found by the fault harness, seed 4: kill -9 then restart).
func TestRestartKeepsSequenceAfterUndeliveredOwnSignals(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		if i == 0 {
			c.Params.JournalDelay = time.Hour // a's signals reach b by gossip only
		} else {
			c.DataDir = dir
			c.Params.Adopt = -1 // and b does not journal them itself
		}
	})
	a, b := nodes[0], nodes[1]
	recA := newRecorder()
	if _, err := a.Subscribe("from.**", recA.handle); err != nil {
		t.Fatal(err)
	}
	recB := newRecorder()
	subB, err := b.Subscribe("from.**", recB.handle)
	if err != nil {
		t.Fatal(err)
	}
	// a's signal goes by gossip only: wait until a's GossipSub knows b is
	// in the topic (a Weak ping arrives), or it would reach nobody.
	warm := newRecorder()
	warmSub, err := b.Subscribe("warmup", warm.handle)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a's gossip reaches b", func() bool {
		_ = a.PublishWith(ctx, node.Weak, mustSignal(t, "warmup"))
		return warm.count() > 0
	})
	_ = warmSub.Close()
	if err := a.Publish(ctx, mustSignal(t, "from.a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b delivers a's signal by gossip", func() bool { return recB.count() == 1 })
	var before []*signalmesh.Signal
	for i := 0; i < 5; i++ {
		before = append(before, mustSignal(t, "from.b", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	if err := b.Publish(ctx, before...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a delivers b's signals", func() bool { return recA.count() == 6 })
	eventually(t, 10*time.Second, "b's own signals in its journal", func() bool {
		c, _, err := b.JournalDigest(ctx)
		return err == nil && c == 5
	})
	_ = subB.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := node.New(ctx, node.Config{Mesh: a.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.Connect(ctx, a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	after := mustSignal(t, "from.b", signalmesh.WithSubject("after"))
	if err := b2.Publish(ctx, after); err != nil {
		t.Fatal(err)
	}
	stamped := func(id string) uint64 {
		var s *signalmesh.Signal
		eventually(t, 10*time.Second, "b journals "+id, func() bool {
			s, err = b2.Get(ctx, id)
			return err == nil
		})
		_, seq := journal.Place(s)
		return seq
	}
	last, got := stamped(before[len(before)-1].ID), stamped(after.ID)
	if got != last+1 {
		t.Fatalf("after the restart b numbered its signal %d, want %d", got, last+1)
	}
	eventually(t, 10*time.Second, "a delivers b's signal from after the restart", func() bool { return recA.count() == 7 })
}

// An effect released without its cause (CauseWait) is not held again when
// the node restarts and replays its journal: the give-up is recorded.
// Restarted with a CauseWait of an hour, the replay would otherwise hold
// the effect, and every later signal of its origin, for that hour.
func TestRestartDoesNotWaitAgainForAGivenUpCause(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := node.Config{Mesh: "restart-decided", DataDir: dir, Logger: testLogger(t), Params: node.Params{CauseWait: 200 * time.Millisecond, Resync: 20 * time.Millisecond}}
	n, err := node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if _, err := n.Subscribe("**", rec.handle); err != nil {
		t.Fatal(err)
	}
	effect := mustSignal(t, "order.shipped", signalmesh.WithCauseID("an-order-nobody-published"))
	after := mustSignal(t, "order.closed")
	if err := n.Publish(ctx, effect, after); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the effect delivered without its cause", func() bool { return rec.count() == 2 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Params.CauseWait = time.Hour
	n, err = node.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	replay := newRecorder()
	if _, err := n.Subscribe("**", replay.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "both in the replay after the restart", func() bool { return replay.count() == 2 })
	if st, err := n.Status(ctx); err != nil || st.Buffered != 0 {
		t.Fatalf("after the restart: %d waiting (%v)", st.Buffered, err)
	}
}

// A node that restarts may get its own earlier messages back from its
// neighbours (its GossipSub seen-cache is new; they offer what they hold
// within GossipSub's history window), and catches up from them: none of
// that may count against the neighbours. With authored messages
// (StrictSign, before the control topics were sealed), GossipSub rejected
// such messages as self-originated and charged the neighbours; messages
// now carry no author, and the node's own signals verify and are dropped as
// duplicates. No neighbour is graylisted while the node catches up.
func TestRestartDoesNotGraylistNeighbours(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 4, func(i int, c *node.Config) {
		if i == 3 {
			c.DataDir = dir
		}
	})
	disk := nodes[3]
	for i := range 100 {
		if err := disk.Publish(ctx, mustSignal(t, "tick", signalmesh.WithSubject(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // a stream, not a batch: many messages in the neighbours' caches
	}
	if err := disk.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := node.New(ctx, node.Config{Mesh: disk.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, o := range nodes[:3] {
		if err := again.Connect(ctx, o.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, "the neighbours linked", func() bool {
		st, err := again.Status(ctx)
		return err == nil && len(st.Links) == 3
	})
	// Scores are refreshed every second: watch three refreshes.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := again.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range st.Links {
			if l.Score < 0 || st.Graylisted > 0 {
				t.Fatalf("after a restart (%d of its own signals handed back), %s scores %.0f (%d graylisted)", st.Deduped, l.Peer, l.Score, st.Graylisted)
			}
		}
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}
