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

// rmvStore pauses go-ds-crdt's Rmv (the elements query of one key: inside
// deleteIfUnchanged, after its Get, before its tombstones) once armed.
type rmvStore struct {
	ds.Batching
	mu      sync.Mutex
	prefix  string
	caught  chan struct{}
	release chan struct{}
}

func (p *rmvStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	p.mu.Lock()
	hold := p.prefix != "" && strings.HasSuffix(q.Prefix, p.prefix)
	if hold {
		p.prefix = ""
	}
	p.mu.Unlock()
	if hold {
		close(p.caught)
		<-p.release
	}
	return p.Batching.Query(ctx, q)
}

// A member rejoins (announceSub, not under writeMu) while the registrar
// deletes its old left entry, between the Get and the Delete.
func TestReviewRejoinDuringLeftEntryDelete(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...) })
	ps := &rmvStore{caught: make(chan struct{}), release: make(chan struct{})}
	testWrapStore = func(s ds.Batching) ds.Batching { ps.Batching = s; return ps }
	defer func() { testWrapStore = nil }()
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	cfg := Config{Mesh: fmt.Sprintf("review-%d", time.Now().UnixNano()), Datastore: dssync.MutexWrap(ds.NewMapDatastore()),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)}
	cfg.Params.Lease = lease
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	h := func(context.Context, *signalmesh.Signal) error { return nil }
	s, err := n.Subscribe("order.**", h, WithGroup("g"))
	if err != nil {
		t.Fatal(err)
	}
	key := subKey(s.info.Peer, s.info.ID)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	ps.prefix = "/subscriptions/s/s" + key.String() // Rmv of this key
	ps.mu.Unlock()
	select {
	case <-ps.caught: // 10 leases on: the registrar deletes the left entry
	case <-time.After(20 * time.Second):
		t.Fatal("no delete of the left entry")
	}
	type res struct {
		s   *Subscription
		err error
	}
	done := make(chan res, 1)
	go func() { s2, err := n.Subscribe("order.**", h, WithGroup("g")); done <- res{s2, err} }() // its live entry put
	// Time for the rejoin's put to land inside the held delete, as it did
	// before announceSub took writeMu; now it waits for the lock whatever
	// this wait.
	time.Sleep(50 * time.Millisecond)
	close(ps.release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.s.Close()
	deadline := time.Now().Add(lease / 6)
	for time.Now().Before(deadline) {
		if has, _ := n.subset.Has(ctx, key); !has {
			t.Fatalf("the rejoined member's live entry was deleted with its old left entry")
		}
		time.Sleep(time.Millisecond)
	}
}
