package bridge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/node"
)

// newNode starts an in-memory node of its own mesh (or on disk under dir).
func newNode(t *testing.T, mesh, dir string) *node.Node {
	t.Helper()
	n, err := node.New(context.Background(), node.Config{Mesh: mesh, DataDir: dir,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func memStore() ds.Batching { return dssync.MutexWrap(ds.NewMapDatastore()) }

// cluster is a one-node cluster with an ingress on a loopback HTTP server.
type cluster struct {
	name string
	n    *node.Node
	in   *bridge.Ingress
	srv  *httptest.Server
	got  *recorder
}

func newCluster(t *testing.T, name string) *cluster {
	t.Helper()
	c := &cluster{name: name, n: newNode(t, fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), ""), got: newRecorder()}
	var err error
	c.in, err = bridge.NewIngress(c.n, bridge.IngressConfig{Cluster: name, Tokens: []string{"tok-" + name}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c.srv = httptest.NewServer(c.in)
	if _, err := c.n.Subscribe("**", c.got.handler); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.srv.Close()
		if err := c.n.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// recorder counts the signals a handler saw, by id.
type recorder struct {
	mu   sync.Mutex
	seen map[string]int
	sigs map[string]*signalmesh.Signal
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]int{}, sigs: map[string]*signalmesh.Signal{}}
}

func (r *recorder) handler(_ context.Context, s *signalmesh.Signal) error {
	r.add(s)
	return nil
}

func (r *recorder) add(s *signalmesh.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[s.ID]++
	r.sigs[s.ID] = s
}

// count returns the distinct signals of types with the prefix, and how many
// arrived more than once.
func (r *recorder) count(prefix string) (distinct, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.seen {
		if strings.HasPrefix(r.sigs[id].Type, prefix) {
			distinct++
			dups += n - 1
		}
	}
	return distinct, dups
}

func (r *recorder) get(id string) *signalmesh.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sigs[id]
}

// await polls cond until it holds or 20 s pass.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
