package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

type peerNode struct {
	*node.Node
	gater *node.Blocklist
}

// cluster starts n in-memory nodes on loopback TCP, all services up before
// any connection, then connects every pair.
func cluster(t *testing.T, n int, mut func(i int, c *node.Config)) []*peerNode {
	t.Helper()
	mesh := fmt.Sprintf("test-%d", time.Now().UnixNano())
	nodes := make([]*peerNode, n)
	for i := range nodes {
		g := node.NewBlocklist()
		cfg := node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Gater: g, Logger: testLogger(t)}
		if mut != nil {
			mut(i, &cfg)
		}
		nd, err := node.New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		nodes[i] = &peerNode{Node: nd, gater: g}
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			if err := nd.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
	})
	connectAll(t, nodes)
	return nodes
}

func connectAll(t *testing.T, nodes []*peerNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			if err := nodes[i].Connect(ctx, nodes[j].AddrInfo()); err != nil {
				t.Fatalf("connect %d-%d: %v", i, j, err)
			}
		}
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventuallyNodes is eventually, and on a timeout it reports what each
// node's Status says it waits for.
func eventuallyNodes(t *testing.T, nodes []*peerNode, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for i, n := range nodes {
				st, _ := n.Status(context.Background())
				fmt.Fprintf(&b, "\nnode %d %s: peers %d mesh %d subscribed %d relinked %d journaled %d heads %d buffered %d unjournaled %d evicted %d clock %v missing %v causes %v links %+v rpcs in %d out %d dropped %v rejected %v deduped %d",
					i, n.ID(), st.Peers, st.Mesh, st.Subscribed, st.Relinked, st.Journaled, st.Heads, st.Buffered, st.Unjournaled, st.Evicted, st.Clock, st.Missing, st.MissingCauses, st.Links, st.RPCsIn, st.RPCsOut, st.Dropped, st.Rejected, st.Deduped)
			}
			for i, n := range nodes {
				for _, c := range n.Host().Network().Conns() {
					fmt.Fprintf(&b, "\nnode %d conn to %s at %s (%s, closed %v):", i, c.RemotePeer().ShortString(), c.RemoteMultiaddr(), c.Stat().Direction, c.IsClosed())
					for _, s := range c.GetStreams() {
						fmt.Fprintf(&b, " %s/%s", s.Protocol(), s.Stat().Direction)
					}
				}
			}
			t.Fatalf("timed out after %v waiting for %s%s", timeout, what, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a handler that records what it receives.
type recorder struct {
	mu   sync.Mutex
	got  []*signalmesh.Signal
	seen map[string]int
}

func newRecorder() *recorder { return &recorder{seen: map[string]int{}} }

func (r *recorder) handle(_ context.Context, s *signalmesh.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
	r.seen[s.ID]++
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) snapshot() []*signalmesh.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*signalmesh.Signal(nil), r.got...)
}

func mustSignal(t testing.TB, typ string, opts ...signalmesh.Option) *signalmesh.Signal {
	t.Helper()
	s, err := signalmesh.New(typ, "/test", nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger sends warnings and errors to the test log, so that a failing
// test shows them and a passing one stays quiet.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// journalsConverge waits until every node holds want journal entries with
// the same digest.
func journalsConverge(t *testing.T, nodes []*peerNode, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("identical journals of %d", want), func() bool {
		digest := ""
		for i, n := range nodes {
			c, d, err := n.JournalDigest(context.Background())
			if err != nil || c != want || (i > 0 && d != digest) {
				return false
			}
			digest = d
		}
		return true
	})
}

// checkLeaks fails the test if any goroutine is left once the test and all
// its cleanups (which close the nodes) are done. Call it first.
func checkLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...) })
}

// joinLate starts a fresh in-memory peer of hub's mesh with a subscription
// to pattern, connects it to hub, and returns what it records (the peer is
// closed at the end of the test).
func joinLate(t *testing.T, hub *node.Node, pattern string) *recorder {
	t.Helper()
	ctx := context.Background()
	late, err := node.New(ctx, node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = late.Close() })
	rec := newRecorder()
	if _, err := late.Subscribe(pattern, rec.handle); err != nil {
		t.Fatal(err)
	}
	if err := late.Connect(ctx, hub.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	return rec
}

// onDisk gives each node of a cluster its own data directory: a journal on
// disk, whose acknowledgements Quorum counts.
func onDisk(t *testing.T) func(int, *node.Config) {
	return func(_ int, c *node.Config) { c.DataDir = t.TempDir() }
}
