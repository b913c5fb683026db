package node

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// pausingStore holds the registrar's read of the set (after its snapshot)
// until released, once armed.
type pausingStore struct {
	ds.Batching
	mu      sync.Mutex
	armed   bool
	reads   int // reads of the set since armed
	caught  chan struct{}
	release chan struct{}
}

func (p *pausingStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := p.Batching.Query(ctx, q) // the snapshot (a map store reads it now)
	if strings.HasSuffix(q.Prefix, "/subscriptions/s/k") {
		p.mu.Lock()
		hold := p.armed
		p.armed = false
		p.reads++
		p.mu.Unlock()
		if hold {
			close(p.caught)
			<-p.release
		}
	}
	return res, err
}

// The race of the diagnosis, end to end: the registrar reads the live
// entry, the member leaves (left entry put, local forgotten), the
// registrar judges the live value "own, not held" and deletes.
func TestReviewRegistrarReadThenLeave(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...) })
	ps := &pausingStore{caught: make(chan struct{}), release: make(chan struct{})}
	testWrapStore = func(s ds.Batching) ds.Batching { ps.Batching = s; return ps }
	defer func() { testWrapStore = nil }()
	ctx := context.Background()
	cfg := Config{Mesh: fmt.Sprintf("review-%d", time.Now().UnixNano()), Datastore: dssync.MutexWrap(ds.NewMapDatastore()),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)}
	cfg.Params.Lease = 2 * time.Second
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	s, err := n.Subscribe("order.**", func(context.Context, *signalmesh.Signal) error { return nil }, WithGroup("g"))
	if err != nil {
		t.Fatal(err)
	}
	key := subKey(s.info.Peer, s.info.ID)
	if has, _ := n.subset.Has(ctx, key); !has {
		t.Fatal("no live entry")
	}
	ps.mu.Lock()
	ps.armed, ps.reads = true, 0
	ps.mu.Unlock()
	n.kickRegistry()
	select {
	case <-ps.caught:
	case <-time.After(10 * time.Second):
		t.Fatal("registrar read not caught")
	}
	if err := s.Close(); err != nil { // withdrawSub: left entry put, local forgotten
		t.Fatal(err)
	}
	close(ps.release)
	// The registrar is one goroutine: its next read of the set starts after
	// it judged the held one and deleted what it judged stale.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ps.mu.Lock()
		reads := ps.reads
		ps.mu.Unlock()
		if reads >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no read of the set after the held one")
		}
		n.kickRegistry()
		time.Sleep(5 * time.Millisecond)
	}
	if has, err := n.subset.Has(ctx, key); err != nil || !has {
		t.Fatalf("the left entry is gone right after the leave (err %v)", err)
	}
}
