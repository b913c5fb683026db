package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/node"
)

// Long periods: no periodic announcement or renewal falls within a test
// (renewals every Lease/3, 40 s), and views are ready after Lease/20 (6 s).
var quietPeriods = node.Params{Lease: 2 * time.Minute, Discover: time.Minute}

func renewals(t *testing.T, n *peerNode) int64 {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.LeaseRenewals
}

func unanswered(t *testing.T, n *peerNode) int64 {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.JoinsUnanswered
}

// stableRenewals waits until n has renewed nothing for quiet (its answers
// to the joins and Hellos of the start are over) and returns the count.
func stableRenewals(t *testing.T, n *peerNode, quiet, timeout time.Duration) int64 {
	t.Helper()
	last, since := renewals(t, n), time.Now()
	eventually(t, timeout, "no renewal for "+quiet.String(), func() bool {
		if r := renewals(t, n); r != last {
			last, since = r, time.Now()
		}
		return time.Since(since) >= quiet
	})
	return last
}

// A peer that comes back within the window (a short cut, a trimmed
// connection dialled again) had this node's last announcement and
// renewal: its joins are left to the next round, not answered by a
// message to the whole mesh. Before, each such join made both nodes renew
// (and announce) within joinQuiet plus a jitter.
func TestJoinsHeardLatelyGoUnanswered(t *testing.T) {
	checkLeaks(t)
	nodes := cluster(t, 2, func(_ int, c *node.Config) { c.Params = quietPeriods })
	a, b := nodes[0], nodes[1]
	eventually(t, 30*time.Second, "both ready, each having heard the other's announcement and lease message", func() bool {
		a1, a2 := a.HeardLately(b.ID())
		b1, b2 := b.HeardLately(a.ID())
		return a1 && a2 && b1 && b2 && a.HeardLive() && b.HeardLive()
	})
	beforeA := stableRenewals(t, a, 2*time.Second, 20*time.Second)
	beforeB := renewals(t, b)
	ua, ub := unanswered(t, a), unanswered(t, b)
	if err := a.Disconnect(b.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "disconnected", func() bool { return len(a.Peers()) == 0 && len(b.Peers()) == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	// Two joins each (the peers and the leases topic), left unanswered.
	eventually(t, 20*time.Second, "the joins seen and left unanswered", func() bool {
		return unanswered(t, a) >= ua+2 && unanswered(t, b) >= ub+2
	})
	// An answer would come within joinQuiet (100 ms) plus a jitter of 10 ms
	// per peer, at least joinGap (1 s) after the last: none may come.
	time.Sleep(1500 * time.Millisecond)
	if ra, rb := renewals(t, a), renewals(t, b); ra != beforeA || rb != beforeB {
		t.Fatalf("renewals after a reconnection within the window: a %d -> %d, b %d -> %d", beforeA, ra, beforeB, rb)
	}
}

// A node that restarts within the window has sent its lease messages
// lately, so its joins go unanswered; its own messages say Hello until it
// has heard who is live, and a Hello is answered: it learns the others at
// once, not at their next round (40 s here).
func TestRestartedNodeIsAnsweredByItsHello(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		c.Params = quietPeriods
		if i == 1 {
			c.DataDir = dir
		}
	})
	a, b := nodes[0], nodes[1]
	eventually(t, 30*time.Second, "both ready, a having heard b's lease message", func() bool {
		_, heard := a.HeardLately(b.ID())
		return heard && a.HeardLive() && b.HeardLive()
	})
	before := stableRenewals(t, a, 2*time.Second, 20*time.Second)
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
	ua := unanswered(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b2.Connect(ctx, a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a renews for the restarted node's Hello", func() bool {
		return renewals(t, a) > before
	})
	// Its joins were left unanswered (heard lately): the Hello did it.
	eventually(t, 20*time.Second, "a's joins of the restarted node left unanswered", func() bool {
		return unanswered(t, a) >= ua+2
	})
	eventually(t, 20*time.Second, "the restarted node sees a as a member", func() bool {
		for _, m := range b2.Members() {
			if m.Peer == a.ID() {
				return true
			}
		}
		return false
	})
}
