package crdt

import (
	"context"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dscrdt "github.com/ipfs/go-ds-crdt"
	ipld "github.com/ipfs/go-ipld-format"
)

// Walk fetches. go-ds-crdt walks the heads of the broadcasts it gets one
// after the other, each until its whole branch is merged or a fetch in it
// failed, and a fetch waits up to its DAG timeout (20 s) for a block. Once
// replicas prune (Prune), a block that nobody holds any more is no fault:
// a peer that was away meets it at the bottom of every branch it walks
// back into history, and every head behind that walk waited the 20 s (a
// node paused for 7 s while the others pruned walked one branch per 20 s
// and stayed minutes short of the mesh: the fault harness's seed 1910).
//
// So, with the prefetcher (Params.Has), go-ds-crdt's walks fetch through
// walkGetter: a block that has not come within walkFetch fails the walk's
// fetch, and the prefetcher is asked for it (a hole: fetched beside the
// walks, tried again, and handed to go-ds-crdt as a head once it is here;
// the repair loop asks again while the store is dirty). A block that
// failed so fails at once in the walks of the next absentFor (the
// prefetcher has it in hand). The blocks that did come are handed to
// go-ds-crdt before any failure: go-ds-crdt stops reading a fetch's
// answers at the first error, and a sibling after it would be left
// unmerged. A live block comes within milliseconds on a LAN; one that
// takes longer than walkFetch (a slow link, a loaded host) comes through
// the prefetcher instead. With 3 s, a node back from a 7 s pause still
// gave up retained dependencies (the fault harness's short DepWait, 5 s)
// while its walks met one pruned block after another (seed 2008).
const (
	walkFetch = time.Second
	absentFor = 30 * time.Second
	maxAbsent = 4096 // blocks remembered as absent; past it, all are forgotten
)

// local reports whether the block is in the blockstore.
func (p *prefetcher) local(ctx context.Context, c cid.Cid) bool {
	if p.has == nil {
		return false
	}
	ok, err := p.has(ctx, c)
	return err == nil && ok
}

// absent are the blocks a walk fetch did not get, and when.
type absent struct {
	mu sync.Mutex
	at map[cid.Cid]time.Time
}

func (a *absent) recent(c cid.Cid) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[c]
	return ok && time.Since(t) < absentFor
}

func (a *absent) add(c cid.Cid) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil || len(a.at) >= maxAbsent {
		a.at = map[cid.Cid]time.Time{}
	}
	a.at[c] = time.Now()
}

// walkDAG is the DAG service go-ds-crdt gets with the prefetcher.
type walkDAG struct {
	ipld.DAGService
	pf   *prefetcher
	gone *absent
}

func (d *walkDAG) GetMany(ctx context.Context, ids []cid.Cid) <-chan *ipld.NodeOption {
	return walkGetMany(ctx, d.DAGService, d.pf, d.gone, ids)
}

// walkSessionDAG is a walkDAG over a DAG service with sessions.
type walkSessionDAG struct {
	walkDAG
	s dscrdt.SessionDAGService
}

func (d *walkSessionDAG) Session(ctx context.Context) ipld.NodeGetter {
	return &walkGetter{ng: d.s.Session(ctx), pf: d.pf, gone: d.gone}
}

type walkGetter struct {
	ng   ipld.NodeGetter
	pf   *prefetcher
	gone *absent
}

func (g *walkGetter) Get(ctx context.Context, id cid.Cid) (ipld.Node, error) {
	return g.ng.Get(ctx, id)
}

func (g *walkGetter) GetMany(ctx context.Context, ids []cid.Cid) <-chan *ipld.NodeOption {
	return walkGetMany(ctx, g.ng, g.pf, g.gone, ids)
}

// walked wraps d (go-ds-crdt's DAG service) in walk fetches.
func walked(d ipld.DAGService, pf *prefetcher) ipld.DAGService {
	w := walkDAG{DAGService: d, pf: pf, gone: &absent{}}
	if s, ok := d.(dscrdt.SessionDAGService); ok {
		return &walkSessionDAG{walkDAG: w, s: s}
	}
	return &w
}

// walkGetMany asks ng for ids (but those absent lately) for at most
// walkFetch; it answers the blocks that came first, then an error for
// each that did not (or that ng refused), and asks the prefetcher for the
// missing ones. Its goroutine ends when ng's channel closes (when done or
// when the shorter context ends); the channel it returns holds every
// answer.
func walkGetMany(ctx context.Context, ng ipld.NodeGetter, pf *prefetcher, gone *absent, ids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(ids))
	ask := make([]cid.Cid, 0, len(ids))
	asked := make(map[cid.Cid]bool, len(ids))
	for _, c := range ids {
		if gone.recent(c) && !pf.local(ctx, c) {
			continue
		}
		ask = append(ask, c)
		asked[c] = true
	}
	wctx, cancel := context.WithTimeout(ctx, walkFetch)
	in := ng.GetMany(wctx, ask)
	go func() {
		defer close(out)
		defer cancel()
		came := make(map[cid.Cid]bool, len(ids))
		var failed []*ipld.NodeOption
		for o := range in {
			if o.Err != nil {
				failed = append(failed, o)
				continue
			}
			came[o.Node.Cid()] = true
			select {
			case out <- o:
			default: // more answers than asked for: not go-ds-crdt's getter
			}
		}
		if len(came) == len(ids) {
			return
		}
		for _, c := range ids {
			if !came[c] && ctx.Err() == nil {
				if asked[c] {
					gone.add(c)
				}
				pf.enqueue(fetch{c: c})
			}
		}
		if len(failed) == 0 { // ng closed its channel without a word for some
			failed = append(failed, &ipld.NodeOption{Err: context.DeadlineExceeded})
		}
		for _, o := range failed {
			select {
			case out <- o:
			default:
			}
		}
	}()
	return out
}
