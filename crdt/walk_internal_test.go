package crdt

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// fixedGetter answers the blocks it has, in the order asked, and for the
// others waits until ctx ends, then answers its error.
type fixedGetter struct{ have map[cid.Cid]ipld.Node }

func (g fixedGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) { panic("not used") }

func (g fixedGetter) GetMany(ctx context.Context, ids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(ids))
	go func() {
		defer close(out)
		missing := false
		for _, c := range ids {
			if nd, ok := g.have[c]; ok {
				out <- &ipld.NodeOption{Node: nd}
			} else {
				missing = true
			}
		}
		if missing {
			<-ctx.Done()
			out <- &ipld.NodeOption{Err: ctx.Err()}
		}
	}()
	return out
}

// A walk fetch of a block nobody has fails within walkFetch, although the
// walk's own context has no end; the blocks that came are answered before
// the error (go-ds-crdt stops reading at the first), and the prefetcher
// is asked for the missing block, once.
func TestWalkGetManyAnswersWhatCameThenFails(t *testing.T) {
	a, b, gone := merkledag.NodeWithData([]byte("a")), merkledag.NodeWithData([]byte("b")), merkledag.NodeWithData([]byte("gone"))
	g := fixedGetter{have: map[cid.Cid]ipld.Node{a.Cid(): a, b.Cid(): b}}
	pf := newPrefetcher(nil, nil, nil, slog.Default())
	var got []string
	miss := &absent{}
	for o := range walkGetMany(context.Background(), g, pf, miss, []cid.Cid{gone.Cid(), a.Cid(), b.Cid()}) {
		if o.Err != nil {
			got = append(got, "err")
			if !errors.Is(o.Err, context.DeadlineExceeded) {
				t.Errorf("error %v, want the walk fetch's deadline", o.Err)
			}
			continue
		}
		got = append(got, string(o.Node.(*merkledag.ProtoNode).Data()))
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "err" {
		t.Fatalf("answers %v, want a, b, then the error", got)
	}
	pf.mu.Lock()
	if !pf.inflight[gone.Cid()] || pf.inflight[a.Cid()] || pf.inflight[b.Cid()] || pf.queued != 1 {
		t.Fatalf("prefetcher asked for %v (%d queued): want the missing block alone", pf.inflight, pf.queued)
	}
	pf.mu.Unlock()
	// Asked again within absentFor, the missing block fails at once,
	// without a fetch.
	start := time.Now()
	var errs int
	for o := range walkGetMany(context.Background(), g, pf, miss, []cid.Cid{a.Cid(), gone.Cid()}) {
		if o.Err != nil {
			errs++
		}
	}
	if took := time.Since(start); errs != 1 || took >= walkFetch {
		t.Fatalf("again: %d errors in %v, want one at once", errs, took)
	}
}
