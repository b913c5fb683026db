package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// A named subscription closed while its handler's retries are pending has
// not handled the signal: its cursor stays before it, and the subscription
// reopened gets it again (Watermill's unacked message at Close).
func TestClosedMidRetryIsNotHandled(t *testing.T) {
	checkLeaks(t)
	n := cluster(t, 1, nil)[0]
	first, second := mustSignal(t, "job.a"), mustSignal(t, "job.b")
	if err := n.Publish(context.Background(), first, second); err != nil {
		t.Fatal(err)
	}
	failing := make(chan string, 16)
	sub, err := n.Subscribe("job.*", func(_ context.Context, s *signalmesh.Signal) error {
		if s.ID == first.ID {
			return nil
		}
		failing <- s.ID
		return errors.New("not now")
	}, node.WithName("jobs"), node.WithStart(node.StartBeginning),
		node.WithRetry(node.Retry{Attempts: 1000, Backoff: time.Hour, MaxBackoff: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	if id := <-failing; id != second.ID {
		t.Fatalf("failing on %s", id)
	}
	if err := sub.Close(); err != nil { // while the retry waits its hour
		t.Fatal(err)
	}
	got := newRecorder()
	sub, err = n.Subscribe("job.*", got.handle, node.WithName("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	eventually(t, 10*time.Second, "the unhandled signal again", func() bool { return got.count() == 1 })
	if s := got.snapshot()[0]; s.ID != second.ID {
		t.Fatalf("reopened got %s, want %s", s.ID, second.ID)
	}
}
