package crdt_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	ipfslite "github.com/hsanjuan/ipfs-lite"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// stallDAG holds back one block: go-ds-crdt's walk of a branch stops there,
// with the blocks above it merged, as when a process is killed mid-walk.
type stallDAG struct {
	ipld.DAGService
	mu    sync.Mutex
	stall cid.Cid
}

func (s *stallDAG) hold(c cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stall = c
}

func (s *stallDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	s.mu.Lock()
	stall := c.Equals(s.stall)
	s.mu.Unlock()
	if stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.DAGService.Get(ctx, c)
}

func (s *stallDAG) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	go func() {
		defer close(out)
		for _, c := range cids {
			n, err := s.Get(ctx, c)
			out <- &ipld.NodeOption{Node: n, Err: err}
		}
	}()
	return out
}

// openOn starts a replica on store, its walks going through wrap(dag).
func openOn(t *testing.T, store ds.Batching, wrap func(ipld.DAGService) ipld.DAGService, mut ...func(*crdt.Params)) *replica {
	t.Helper()
	return openWith(t, store, wrap, false, mut...)
}

// openWith opens a replica; sealed: on a GossipSub that signs nothing,
// its announcements sealed with its host's key (Params.Key), as a node
// runs it.
func openWith(t *testing.T, store ds.Batching, wrap func(ipld.DAGService) ipld.DAGService, sealed bool, mut ...func(*crdt.Params)) *replica {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts := []pubsub.Option{pubsub.WithFloodPublish(true)}
	if sealed {
		opts = append(opts, noSign()...)
	}
	ps, err := pubsub.NewGossipSub(ctx, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	dag, err := ipfslite.New(ctx, store, nil, h, nil, &ipfslite.Config{ReprovideInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var walk ipld.DAGService = dag
	if wrap != nil {
		walk = wrap(dag)
	}
	p := crdt.Params{
		Namespace: ds.NewKey("/test"), Topic: "test-heads",
		RebroadcastInterval: time.Hour, // only the join announcement can help
		Has:                 dag.HasBlock,
	}
	if sealed {
		p.Key, p.Self = h.Peerstore().PrivKey(h.ID()), h.ID()
	}
	for _, m := range mut {
		m(&p)
	}
	if _, ok := p.Host.(streamsHost); ok {
		p.Host = h
	}
	r, err := crdt.Open(store, walk, ps, p)
	if err != nil {
		t.Fatal(err)
	}
	rep := &replica{h: h, r: r, dag: dag, cancel: cancel}
	t.Cleanup(rep.close)
	return rep
}

// streamsHost stands for the replica's own host in a Params option (see
// withStreams): openWith puts the host there.
type streamsHost struct{ host.Host }

// withStreams answers joins with heads sent on streams (Params.Host).
func withStreams(p *crdt.Params) { p.Host = streamsHost{} }

// noSign are the GossipSub options of a node: no author, no signature,
// messages named by their content.
func noSign() []pubsub.Option {
	return []pubsub.Option{pubsub.WithNoAuthor(), pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithMessageIdFn(func(m *pubsubpb.Message) string { h := sha256.Sum256(m.Data); return string(h[:]) })}
}

func waitHas(t *testing.T, r *replica, key string, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for {
		has, err := r.r.Has(ctx, ds.NewKey(key))
		if err != nil {
			t.Fatal(err)
		}
		if has {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never arrived (heads %d, unmerged %d)", key, r.r.Heads(ctx), r.r.Unmerged())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func copyStore(t *testing.T, from ds.Datastore) ds.Batching {
	t.Helper()
	ctx := context.Background()
	to := dssync.MutexWrap(ds.NewMapDatastore())
	res, err := from.Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for e := range res.Next() {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		if err := to.Put(ctx, ds.NewKey(e.Key), e.Value); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("nothing to copy")
	}
	return to
}

// A replica killed in the middle of walking a branch (its top merged, the
// rest not yet) merges the rest after it restarts. go-ds-crdt alone would
// not: every later announcement stops at the merged top, and its repair
// walk starts from the heads, which the cut branch never joined (seed 4002
// of the fault harness: a replica killed -9 stayed ~70 entries short).
func TestWalkCutByAKillIsFinishedAfterRestart(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a := newReplica(t)
	put := func(k string) cid.Cid {
		t.Helper()
		if err := a.r.Put(ctx, ds.NewKey(k), []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
		heads := a.r.InternalStats(ctx).Heads
		if len(heads) != 1 {
			t.Fatalf("a has %d heads", len(heads))
		}
		return heads[0]
	}
	put("/k0")

	// c syncs k0, so that it has a head of its own; then a writes a chain
	// k1 <- k2 <- k3 and c's walk of it stops at k1's block.
	cStore := dssync.MutexWrap(ds.NewMapDatastore())
	var stall stallDAG
	c := openOn(t, cStore, func(d ipld.DAGService) ipld.DAGService {
		stall.DAGService = d
		return &stall
	})
	if err := c.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	waitHas(t, c, "/k0", 20*time.Second)
	// Apart while a writes, so that c hears of the chain by its top only.
	if err := c.h.Network().ClosePeer(a.h.ID()); err != nil {
		t.Fatal(err)
	}
	stall.hold(put("/k1"))
	put("/k2")
	put("/k3")
	if err := c.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	if err := a.r.Announce(ctx); err != nil {
		t.Fatal(err)
	}
	waitHas(t, c, "/k3", 20*time.Second)
	waitHas(t, c, "/k2", 20*time.Second)
	if has, _ := c.r.Has(ctx, ds.NewKey("/k1")); has {
		t.Fatal("the stalled block was merged")
	}

	// The kill: what c's store holds now, with no Close.
	snapshot := copyStore(t, cStore)
	c.close()

	c2 := openOn(t, snapshot, nil)
	if err := c2.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	if err := a.r.Announce(ctx); err != nil { // a's heads reach c2: alone, they would not help
		t.Fatal(err)
	}
	waitHas(t, c2, "/k1", 30*time.Second)
	for i := range 4 {
		waitHas(t, c2, fmt.Sprint("/k", i), time.Second)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for c2.r.Unmerged() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := c2.r.Unmerged(); n != 0 {
		t.Fatalf("%d holes left", n)
	}

	// The cut branch's top is a head of c2 again: a replica that can learn
	// the journal from c2 alone (a is gone) gets all of it.
	a.close()
	d := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	if err := d.h.Connect(ctx, c2.h.Peerstore().PeerInfo(c2.h.ID())); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		waitHas(t, d, fmt.Sprint("/k", i), 20*time.Second)
	}
	d.close()
	c2.close()
}
