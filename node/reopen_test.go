package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A node on disk closed cleanly reopens without reading its journal (it
// restores its causal state from the record Close wrote), and behaves as
// if it had: its sequence numbers go on, a retry of a journaled signal is
// not stamped again, an effect of a journaled cause is delivered at once.
// After a crash (no record) it reads the whole journal, as before.
func TestReopenReadsNoJournal(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := node.Config{Mesh: "reopen", DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)}
	open := func() *node.Node {
		t.Helper()
		n, err := node.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const sent = 300
	first := open()
	var old []*signalmesh.Signal
	for i := range sent {
		old = append(old, mustSignal(t, "feed.old", signalmesh.WithSubject(fmt.Sprint(i))))
	}
	for i := 0; i < sent; i += 100 {
		if err := first.Publish(ctx, old[i:i+100]...); err != nil {
			t.Fatal(err)
		}
	}
	journaled := func(n *node.Node, want int) func() bool {
		return func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == want }
	}
	eventually(t, 20*time.Second, "the journal holds what was published", journaled(first, sent))
	if first.StartRead() != 0 {
		t.Fatalf("a fresh node read %d journal entries at start", first.StartRead())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	n := open()
	if got := n.StartRead(); got != 0 {
		t.Fatalf("a clean reopen read %d journal entries, want 0", got)
	}
	rec := newRecorder()
	if _, err := n.Subscribe("feed.**", rec.handle); err != nil {
		t.Fatal(err)
	}
	// A retry of a journaled signal is not stamped again: the next new
	// signal takes the next sequence number.
	if err := n.Publish(ctx, old[7]); err != nil {
		t.Fatal(err)
	}
	effect := mustSignal(t, "feed.effect", signalmesh.WithCause(old[0]))
	if err := n.Publish(ctx, effect); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the effect journaled", journaled(n, sent+1))
	got, err := n.Get(ctx, effect.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, seq := journal.Place(got); seq != sent+1 {
		t.Fatalf("the first signal after the reopen has sequence %d, want %d", seq, sent+1)
	}
	// Its cause was delivered before the reopen: no wait (CauseWait is 2
	// minutes), and the old signals are not delivered again.
	eventually(t, 10*time.Second, "the effect delivered", func() bool { return rec.count() == 1 })
	if s := rec.snapshot()[0]; s.ID != effect.ID {
		t.Fatalf("delivered %s (%s), want only the effect", s.ID, s.Type)
	}
	if _, err := n.Get(ctx, old[sent-1].ID); err != nil {
		t.Fatalf("an old signal is not found after the reopen: %v", err)
	}
	node.SetTestCrashClose(true)
	err = n.Close()
	node.SetTestCrashClose(false)
	if err != nil {
		t.Fatal(err)
	}

	// No record (as after a kill -9): the start reads the journal.
	again := open()
	defer again.Close()
	if got := again.StartRead(); got < sent+1 {
		t.Fatalf("a start without a record read %d journal entries, want all %d", got, sent+1)
	}
	next := mustSignal(t, "feed.next")
	if err := again.Publish(ctx, next); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the next signal journaled", journaled(again, sent+2))
	if got, err := again.Get(ctx, next.ID); err != nil {
		t.Fatal(err)
	} else if _, seq := journal.Place(got); seq != sent+2 {
		t.Fatalf("sequence %d after the replay, want %d", seq, sent+2)
	}
}

// Config.Retention bounds the local view: Replay says where it left out
// signals past retention (a *TruncatedError, then it goes on), and leaves
// them out.
func TestReplaySaysWhereRetentionCut(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "retention", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "sensor.**", MaxAge: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	old := mustSignal(t, "sensor.temp", signalmesh.WithTime(time.Now().Add(-2*time.Hour)))
	fresh := mustSignal(t, "sensor.temp", signalmesh.WithCause(old))
	other := mustSignal(t, "audit.login", signalmesh.WithTime(time.Now().Add(-100*time.Hour)))
	if err := n.Publish(ctx, old, fresh, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the journal holds them", func() bool {
		c, _, err := n.JournalDigest(ctx)
		return err == nil && c == 3
	})
	var got []string
	for s, err := range n.Replay(ctx, "**") {
		var trunc *node.TruncatedError
		switch {
		case errors.As(err, &trunc):
			got = append(got, fmt.Sprintf("truncated %d", trunc.Left))
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, s.Type)
		}
	}
	want := []string{"truncated 1", "sensor.temp", "audit.login"}
	if !slices.Equal(got, want) {
		t.Fatalf("replay gave %v, want %v", got, want)
	}
	if _, err := n.Get(ctx, old.ID); err != nil {
		t.Fatalf("a signal past retention is still on disk and found by id (until epochs reclaim it): %v", err)
	}
	// A subscription from the beginning starts at the oldest retained
	// signal, and is told first how many it passed over (a truncation
	// notice, whatever its pattern); one with a start that passed over
	// nothing is told nothing.
	rec := newRecorder()
	if _, err := n.Subscribe("sensor.**", rec.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the notice and the retained signal handed over", func() bool { return rec.count() == 2 })
	got2 := rec.snapshot()
	if left, ok := node.Truncation(got2[0]); !ok || left != 1 || got2[0].Type != node.TypeTruncated {
		t.Fatalf("the backlog began with %s %s (%d, %v), want a truncation notice of 1", got2[0].Type, got2[0].Data, left, ok)
	}
	if got2[1].ID != fresh.ID {
		t.Fatalf("the backlog went on with %s, want the retained %s", got2[1].ID, fresh.ID)
	}
	if _, ok := node.Truncation(got2[1]); ok {
		t.Fatal("a signal read as a truncation notice")
	}
	audit := newRecorder()
	if _, err := n.Subscribe("audit.**", audit.handle, node.WithStart(node.StartBeginning)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the audit signal handed over", func() bool { return audit.count() == 1 })
	if got := audit.snapshot(); got[0].ID != other.ID {
		t.Fatalf("a backlog that passed over nothing began with %s (%s), want %s", got[0].ID, got[0].Type, other.ID)
	}
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Truncated != 1 {
		t.Fatalf("Status.Truncated %d, want 1", st.Truncated)
	}
}
