//go:build openissues

package node_test

// Tests of promises the no-loss work (lossless persistent subscriptions,
// durable hand-off, honest quorum acks) must keep: they fail today. Run
// them with -tags openissues.

import (
	"context"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/node"
)

// An idempotent retry of a Quorum publish (the usual reaction to a
// QuorumError or a lost reply) is deduplicated by the committer: nothing is
// journaled again, so no peer acknowledges again, and the retry waits for
// acknowledgements that never come although the signal is durable on k
// peers.
func TestReviewQuorumRetryOfDurableSignalFails(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	x := mustSignal(t, "feed.x")
	c1, cancel1 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel1()
	if err := nodes[0].PublishWith(c1, node.Quorum(1), x); err != nil {
		t.Fatal(err)
	}
	c2, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	if err := nodes[0].PublishWith(c2, node.Quorum(1), x); err != nil {
		t.Fatalf("retry of a signal already acknowledged by 1 peer: %v", err)
	}
}
