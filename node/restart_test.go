package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
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
