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
	p := newPrefetcher(g, func(context.Context, cid.Cid) (bool, error) { return false, nil }, nil, slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1 + prefetchWorkers)
	go p.retry(ctx, &wg)
	for range prefetchWorkers {
		go p.work(ctx, &wg)
	}
	defer func() { cancel(); wg.Wait() }()

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
