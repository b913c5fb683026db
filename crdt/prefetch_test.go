package crdt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// slowGetter serves every block after delay, except those in never, which
// it holds until the fetch times out.
type slowGetter struct {
	delay time.Duration
	never map[cid.Cid]bool
	nodes map[cid.Cid]ipld.Node
}

func (g slowGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if g.never[c] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(g.delay):
		return g.nodes[c], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g slowGetter) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	panic("not used")
}

func blocks(n int, tag string) ([]cid.Cid, map[cid.Cid]ipld.Node) {
	var cs []cid.Cid
	m := map[cid.Cid]ipld.Node{}
	for i := range n {
		nd := merkledag.NodeWithData([]byte(fmt.Sprint(tag, i)))
		_ = nd.SetCidBuilder(merkledag.V1CidPrefix())
		cs = append(cs, nd.Cid())
		m[nd.Cid()] = nd
	}
	return cs, m
}

// Heads of one announcer are fetched as fast as the workers go, and a
// second announcer's head does not wait behind the heads of one whose
// blocks nobody serves.
func TestPrefetcherTakesAnnouncersInTurn(t *testing.T) {
	dead, deadNodes := blocks(64, "dead")
	live, liveNodes := blocks(64, "live")
	g := slowGetter{delay: 10 * time.Millisecond, never: map[cid.Cid]bool{}, nodes: liveNodes}
	for _, c := range dead {
		g.never[c] = true
		g.nodes[c] = deadNodes[c]
	}
	p := runPrefetcher(t, g)

	for _, c := range dead {
		p.enqueue(fetch{c: c, from: peer.ID("departed")})
	}
	start := time.Now()
	for _, c := range live {
		p.enqueue(fetch{c: c, from: peer.ID("live")})
	}
	got := map[cid.Cid]bool{}
	deadline := time.After(20 * time.Second) // first-come order: 80 s (64 dead heads of 10 s, 8 workers)
	for len(got) < len(live) {
		select {
		case b := <-p.out:
			var bc pb.CRDTBroadcast
			if err := proto.Unmarshal(b, &bc); err != nil {
				t.Fatal(err)
			}
			c, _ := cid.Cast(bc.Heads[0].Cid)
			if g.never[c] {
				t.Fatalf("a dead head was forwarded")
			}
			got[c] = true
		case <-deadline:
			t.Fatalf("%d of %d live heads after 20 s", len(got), len(live))
		}
	}
	// 64 fetches of 10 ms, by the workers the departed peer leaves free.
	t.Logf("64 live heads in %v, beside 64 heads nobody serves", time.Since(start))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active["departed"] > perPeerFetches {
		t.Fatalf("%d fetches of one announcer at once", p.active["departed"])
	}
}

// A head fetch still waiting after slowAfter is reported slow (once), and
// then as come when its block arrives; a fast one is not reported at all.
func TestPrefetcherReportsSlowFetches(t *testing.T) {
	slowHead, slowNodes := blocks(1, "slow")
	fastHead, fastNodes := blocks(1, "fast")
	for c, nd := range fastNodes {
		slowNodes[c] = nd
	}
	g := &gatedGetter{nodes: slowNodes, gate: map[cid.Cid]chan struct{}{slowHead[0]: make(chan struct{})}}
	p := newPrefetcher(g, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	type report struct {
		from peer.ID
		slow bool
	}
	reports := make(chan report, 8)
	p.slow, p.slowAfter = func(from peer.ID, slow bool) { reports <- report{from, slow} }, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go p.work(ctx, &wg)
	defer func() { cancel(); wg.Wait() }()
	next := func() report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no report")
		}
		return report{}
	}
	forwarded := func() {
		t.Helper()
		select {
		case <-p.out:
		case <-time.After(10 * time.Second):
			t.Fatal("head not forwarded")
		}
	}
	p.enqueue(fetch{c: fastHead[0], from: "fast"})
	forwarded()
	p.enqueue(fetch{c: slowHead[0], from: "slow"})
	if r := next(); r != (report{"slow", true}) {
		t.Fatalf("first report %+v, want the slow announcer, slow", r)
	}
	close(g.gate[slowHead[0]])
	forwarded()
	if r := next(); r != (report{"slow", false}) {
		t.Fatalf("second report %+v, want the slow announcer, come", r)
	}
	select {
	case r := <-reports:
		t.Fatalf("more reports: %+v (the fast fetch must not be reported)", r)
	default:
	}
}

// gatedGetter serves a block at once, or once its gate is closed.
type gatedGetter struct {
	nodes map[cid.Cid]ipld.Node
	gate  map[cid.Cid]chan struct{}
}

func (g *gatedGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if ch, ok := g.gate[c]; ok {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.nodes[c], nil
}

func (g *gatedGetter) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption { panic("not used") }

// This replica's own wants (holes) that nobody serves, the blocks of a
// pruned history, take at most ownFetches workers: an announced head
// queued after 64 of them is fetched at once, not after them (80 s).
func TestPrefetcherLeavesWorkersToHeadsBesideHoles(t *testing.T) {
	gone, goneNodes := blocks(64, "pruned")
	live, liveNodes := blocks(1, "head")
	g := slowGetter{delay: 10 * time.Millisecond, never: map[cid.Cid]bool{}, nodes: liveNodes}
	for _, c := range gone {
		g.never[c] = true
		g.nodes[c] = goneNodes[c]
	}
	p := newPrefetcher(g, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(prefetchWorkers)
	for range prefetchWorkers {
		go p.work(ctx, &wg)
	}
	defer func() { cancel(); wg.Wait() }()
	for _, c := range gone {
		p.enqueue(fetch{c: c})
	}
	p.enqueue(fetch{c: live[0], from: peer.ID("live")})
	awaitForwarded(t, p, live[0], prefetchTimeout-time.Second, "the live head waited behind the holes")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active[""] > ownFetches {
		t.Fatalf("%d own wants fetched at once, want at most %d", p.active[""], ownFetches)
	}
}

// An announcer's heads that nobody serves any more (pruned, heard late)
// failed once and wait for a retry, filling its share: its current head,
// announced again, takes the place of the oldest of them, not dropped for
// them (fault harness seed 2008); and a head announced again while it
// waits goes to the front of its announcer's queue.
func TestPrefetcherMakesRoomForAnAnnouncersCurrentHead(t *testing.T) {
	gone, goneNodes := blocks(perPeerQueued, "pruned")
	live, liveNodes := blocks(3, "head")
	g := slowGetter{delay: 10 * time.Millisecond, never: map[cid.Cid]bool{}, nodes: liveNodes}
	for _, c := range gone {
		g.never[c] = true
		g.nodes[c] = goneNodes[c]
	}
	p := newPrefetcher(g, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	for _, c := range gone { // each fetched once and failed, as work does
		p.enqueue(fetch{c: c, from: peer.ID("x")})
		f, ok := p.next()
		if !ok {
			t.Fatal("nothing to fetch")
		}
		p.mu.Lock()
		p.later = append(p.later, retry{fetch{c: f.c, from: f.from, tries: 1}, time.Now().Add(time.Hour)})
		p.mu.Unlock()
		p.end(f, false)
	}
	p.enqueue(fetch{c: live[0], from: peer.ID("x")})
	if p.dropped.Load() != 1 {
		t.Fatalf("%d dropped, want the oldest waiting for a retry", p.dropped.Load())
	}
	p.enqueue(fetch{c: live[1], from: peer.ID("x")})
	p.enqueue(fetch{c: live[2], from: peer.ID("x")})
	p.enqueue(fetch{c: live[2], from: peer.ID("x")}) // announced again: first
	if f, ok := p.next(); !ok || f.c != live[2] {
		t.Fatalf("next %v, want the head announced again", f.c)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held["x"] != perPeerQueued || p.queued != 2 || len(p.later) != perPeerQueued-3 {
		t.Fatalf("held %d, queued %d, waiting %d", p.held["x"], p.queued, len(p.later))
	}
}

// A head queued behind the fetches of its first announcer, which nobody
// serves, is fetched at once when another peer announces it: it waits for
// a slot of the peer that announced it last, not for the first one's
// fetches to time out (10 s each).
func TestPrefetcherTakesAHeadAnnouncedAgainByAnother(t *testing.T) {
	dead, deadNodes := blocks(perPeerFetches, "dead")
	live, liveNodes := blocks(1, "live")
	g := slowGetter{delay: time.Millisecond, never: map[cid.Cid]bool{}, nodes: liveNodes}
	for _, c := range dead {
		g.never[c] = true
		g.nodes[c] = deadNodes[c]
	}
	p := runPrefetcher(t, g)

	stuck, other := peer.ID("stuck"), peer.ID("other")
	for _, c := range dead {
		p.enqueue(fetch{c: c, from: stuck})
	}
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		n := p.active[stuck]
		p.mu.Unlock()
		if n == perPeerFetches {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stuck's heads not taken: %d fetched", n)
		}
	}
	p.enqueue(fetch{c: live[0], from: stuck}) // third: waits for a slot of stuck's
	p.enqueue(fetch{c: live[0], from: other})
	awaitForwarded(t, p, live[0], prefetchTimeout/2, "the head announced again by another peer still waits for the first announcer's fetches")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[stuck] != perPeerFetches || p.held[other] != 0 || p.active[stuck] != perPeerFetches {
		t.Fatalf("held %v, active %v: want only stuck's %d dead heads", p.held, p.active, perPeerFetches)
	}
}

// A head announced again moves to the new announcer only when it would wait
// for a slot where it is and the new announcer has one free: the last to
// announce it (after a heal every peer announces the same heads) may be a
// peer whose fetches nobody serves.
func TestPrefetcherKeepsAHeadWhereASlotIsFree(t *testing.T) {
	hs, _ := blocks(1, "h")
	h := hs[0]
	p := newPrefetcher(slowGetter{}, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	live, busy := peer.ID("live"), peer.ID("busy")
	p.active[busy] = perPeerFetches // two fetches nobody serves
	p.enqueue(fetch{c: h, from: live})
	p.enqueue(fetch{c: h, from: busy})
	if len(p.queues[live]) != 1 || len(p.queues[busy]) != 0 || p.held[live] != 1 || p.held[busy] != 0 {
		t.Fatalf("moved to a busy announcer: queues %v, held %v", p.queues, p.held)
	}
	p.active[live], p.active[busy] = perPeerFetches, 0
	p.enqueue(fetch{c: h, from: busy})
	if len(p.queues[live]) != 0 || len(p.queues[busy]) != 1 || p.held[live] != 0 || p.held[busy] != 1 ||
		p.queued != 1 || len(p.turn) != 1 || p.turn[0] != busy {
		t.Fatalf("not moved to a free announcer: queues %v, held %v, turn %v, queued %d", p.queues, p.held, p.turn, p.queued)
	}
}

// A head waiting for a retry that another peer announces is retried under
// that peer when its first announcer's slots are all taken, with the count
// of heads held moved along; under its first announcer when a slot is free
// there.
func TestPrefetcherRetriesAHeadUnderAFreeAnnouncer(t *testing.T) {
	hs, _ := blocks(1, "h")
	h := hs[0]
	p := newPrefetcher(slowGetter{}, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	stuck, other := peer.ID("stuck"), peer.ID("other")
	p.inflight[h], p.held[stuck] = true, 1
	p.later = []retry{{f: fetch{c: h, from: stuck, tries: 1}, at: time.Now().Add(time.Minute)}}

	p.enqueue(fetch{c: h, from: other}) // stuck has a free slot: stays
	if r := p.later[0]; r.f.from != stuck || !r.at.IsZero() || p.held[stuck] != 1 || p.held[other] != 0 {
		t.Fatalf("retry %+v, held %v: want it due under stuck", r, p.held)
	}
	p.active[stuck] = perPeerFetches // two fetches nobody serves
	p.enqueue(fetch{c: h, from: other})
	if r := p.later[0]; r.f.from != other || r.f.tries != 1 || p.held[stuck] != 0 || p.held[other] != 1 {
		t.Fatalf("retry %+v, held %v: want it under other", r, p.held)
	}
}

// runPrefetcher starts a prefetcher on g with its workers and retry loop,
// stopped when the test ends; no block is local.
func runPrefetcher(t *testing.T, g ipld.NodeGetter) *prefetcher {
	p := newPrefetcher(g, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1 + prefetchWorkers)
	go p.retry(ctx, &wg)
	for range prefetchWorkers {
		go p.work(ctx, &wg)
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// awaitForwarded fails the test unless the next head p forwards comes
// within d and is want.
func awaitForwarded(t *testing.T, p *prefetcher, want cid.Cid, d time.Duration, late string) {
	t.Helper()
	select {
	case b := <-p.out:
		var bc pb.CRDTBroadcast
		if err := proto.Unmarshal(b, &bc); err != nil {
			t.Fatal(err)
		}
		if c, _ := cid.Cast(bc.Heads[0].Cid); c != want {
			t.Fatalf("forwarded %v, want %v", c, want)
		}
	case <-time.After(d):
		t.Fatalf("%s after %v", late, d)
	}
}
