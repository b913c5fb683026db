package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/node"
)

// Long periods: no periodic announcement or renewal falls within a test
// (renewals every Lease/3 or more, 40 s), and views are ready after
// Lease/20 (6 s).
var quietPeriods = node.Params{Lease: 2 * time.Minute, Discover: time.Minute}

func status(t *testing.T, n *node.Node) node.Status {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// stableRenewals waits until none of nodes has renewed for quiet (their
// answers to the joins and Hellos of the start are over) and returns
// their counts.
func stableRenewals(t *testing.T, quiet, timeout time.Duration, nodes ...*node.Node) []int64 {
	t.Helper()
	counts := func() []int64 {
		var c []int64
		for _, n := range nodes {
			c = append(c, status(t, n).LeaseRenewals)
		}
		return c
	}
	last, since := counts(), time.Now()
	eventually(t, timeout, "no renewal for "+quiet.String(), func() bool {
		c := counts()
		for i := range c {
			if c[i] != last[i] {
				last, since = c, time.Now()
			}
		}
		return time.Since(since) >= quiet
	})
	return last
}

// heardBoth reports whether n heard p's announcement and lease message
// within the windows of a join (quietPeriods: 90 s and 60 s).
func heardBoth(n *node.Node, p *node.Node) bool {
	ann, ren := n.LastHeard(p.ID())
	return time.Since(ann) < 90*time.Second && time.Since(ren) < time.Minute
}

func reconnect(t *testing.T, a, b *peerNode) {
	t.Helper()
	// Blocked meanwhile: a node left with no peer redials the ones it
	// knew (Params.Redial), which would race the wait below.
	a.gater.Block(b.ID())
	b.gater.Block(a.ID())
	if err := a.Disconnect(b.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "disconnected", func() bool { return len(a.Peers()) == 0 && len(b.Peers()) == 0 })
	a.gater.Clear()
	b.gater.Clear()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

// A peer that comes back within the window (a short cut, a trimmed
// connection dialled again) still holds this node's live entries: its
// joins are left to the next round, not answered by a message to the
// whole mesh. Before, each such join made both nodes renew and announce
// within joinQuiet plus a jitter.
func TestJoinsHeardLatelyGoUnanswered(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, func(_ int, c *node.Config) { c.Params = quietPeriods })
	a, b := nodes[0], nodes[1]
	eventually(t, 30*time.Second, "both ready, each having heard the other's announcement and lease message", func() bool {
		return heardBoth(a.Node, b.Node) && heardBoth(b.Node, a.Node) && a.HeardLive() && b.HeardLive()
	})
	before := stableRenewals(t, 2*time.Second, 20*time.Second, a.Node, b.Node)
	annA, renA := b.LastHeard(a.ID())
	annB, renB := a.LastHeard(b.ID())
	ua, ub := status(t, a.Node).JoinsUnanswered, status(t, b.Node).JoinsUnanswered
	reconnect(t, a, b)
	// Two joins each (the peers and the leases topic), left unanswered.
	eventually(t, 20*time.Second, "the joins seen and left unanswered", func() bool {
		return status(t, a.Node).JoinsUnanswered >= ua+2 && status(t, b.Node).JoinsUnanswered >= ub+2
	})
	// An answer would come within joinQuiet (100 ms) plus a jitter of 10 ms
	// per peer, at least joinGap (1 s) after the last: none may come.
	time.Sleep(1500 * time.Millisecond)
	after := []int64{status(t, a.Node).LeaseRenewals, status(t, b.Node).LeaseRenewals}
	if after[0] != before[0] || after[1] != before[1] {
		t.Errorf("renewals after a reconnection within the window: %v -> %v", before, after)
	}
	if ann, ren := b.LastHeard(a.ID()); !ann.Equal(annA) || !ren.Equal(renA) {
		t.Errorf("b heard a again: announcement %v -> %v, lease message %v -> %v", annA, ann, renA, ren)
	}
	if ann, ren := a.LastHeard(b.ID()); !ann.Equal(annB) || !ren.Equal(renB) {
		t.Errorf("a heard b again: announcement %v -> %v, lease message %v -> %v", annB, ann, renB, ren)
	}
}

// restartB closes b, whose data directory is dir, starts it again on it
// (the same identity) and returns the new node, closed at the end.
func restartB(t *testing.T, a, b *peerNode, dir string) *node.Node {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{Mesh: a.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Params: quietPeriods, Logger: testLogger(t)}
	b2, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	if b2.ID() != b.ID() {
		t.Fatalf("restarted as %s, want %s", b2.ID(), b.ID())
	}
	return b2
}

// A node that restarts within the window sent its lease messages lately,
// so its joins go unanswered; it says Hello (until it has heard who is
// live, and when it answers the join of a peer it has not heard since it
// started), and a Hello is answered: it learns the others at once, not at
// their next round (40 s here). Both ways: connected at once, and
// connected only after its views were published with nobody to hear.
func TestRestartedNodeIsAnsweredByItsHello(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alone bool // connect only once its views are published
	}{{"at once", false}, {"ready alone", true}} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			dir := t.TempDir()
			nodes := cluster(t, 2, func(i int, c *node.Config) {
				c.Params = quietPeriods
				if i == 1 {
					c.DataDir = dir
				}
			})
			a, b := nodes[0], nodes[1]
			eventually(t, 30*time.Second, "both ready, a having heard b's announcement and lease message", func() bool {
				return heardBoth(a.Node, b.Node) && a.HeardLive() && b.HeardLive()
			})
			before := stableRenewals(t, 2*time.Second, 20*time.Second, a.Node)[0]
			b2 := restartB(t, a, b, dir)
			if tc.alone {
				eventually(t, 30*time.Second, "the restarted node ready alone", b2.HeardLive)
			}
			ua := status(t, a.Node).JoinsUnanswered
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b2.Connect(ctx, a.AddrInfo()); err != nil {
				t.Fatal(err)
			}
			// Its joins are left unanswered (heard lately): the Hello does it.
			eventually(t, 20*time.Second, "a's joins of the restarted node left unanswered", func() bool {
				return status(t, a.Node).JoinsUnanswered >= ua+2
			})
			eventually(t, 20*time.Second, "a renews for the restarted node's Hello", func() bool {
				return status(t, a.Node).LeaseRenewals > before
			})
			eventually(t, 20*time.Second, "the restarted node sees a as a member", func() bool {
				for _, m := range b2.Members() {
					if m.Peer == a.ID() {
						return true
					}
				}
				return false
			})
		})
	}
}
