package crdt_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/signalmesh/signalmesh/crdt"
)

// gateDAG holds back one block until open is closed: a slow fetch.
type gateDAG struct {
	ipld.DAGService
	mu    sync.Mutex
	stall cid.Cid
	open  chan struct{}
}

func (s *gateDAG) hold(c cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stall = c
}

func (s *gateDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	s.mu.Lock()
	stall := c.Equals(s.stall)
	s.mu.Unlock()
	if stall {
		select {
		case <-s.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.DAGService.Get(ctx, c)
}

func (s *gateDAG) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
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

// Review: snapshot.go says "every value of a listed block is in the values
// read after", and that go-ds-crdt's walk of any head "stops at the first
// block of that list: it fetches only what the snapshot did not cover".
// But go-ds-crdt v0.6.8 marks a block merged before it has walked the
// block's children (processNode: Merge, markProcessed, then the children).
// A provider in the middle of a walk (catching up, after a partition, or
// with holes its recovery scan has not filled yet) lists a block whose
// children it has not merged. The joiner marks that block merged, so its
// own walks stop there and the children's values never reach it, while
// the provider gets them a moment later.
func TestReviewSeedFromAProviderMidWalkLosesTheChildren(t *testing.T) {
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
	var stall gateDAG
	stall.open = make(chan struct{})
	p := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), func(d ipld.DAGService) ipld.DAGService {
		stall.DAGService = d
		return &stall
	})
	if err := p.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	waitHas(t, p, "/k0", 20*time.Second)
	if err := p.h.Network().ClosePeer(a.h.ID()); err != nil {
		t.Fatal(err)
	}
	// The provider's walk of k3 <- k2 <- k1 is slow at k1 (a fetch under
	// way): k3's and k2's blocks are merged, k1's not yet.
	stall.hold(put("/k1"))
	put("/k2")
	put("/k3")
	if err := p.h.Connect(ctx, a.h.Peerstore().PeerInfo(a.h.ID())); err != nil {
		t.Fatal(err)
	}
	// Announced until p has it: one announcement may go out before p is
	// back in a's topic mesh.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if err := a.r.Announce(ctx); err != nil {
			t.Fatal(err)
		}
		if has, _ := p.r.Has(ctx, ds.NewKey("/k3")); has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/k3 never reached the provider")
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitHas(t, p, "/k2", 20*time.Second)

	// A joiner takes the provider's snapshot now (as node.writeSnapshot
	// does: blocks, then values), whole, and releases.
	j := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.Hold = true })
	seedFrom(t, p.r, j.r, nil, true)
	j.r.Release()
	close(stall.open) // the provider's fetch goes through from now on
	for _, r := range []*replica{a, p} {
		if err := j.h.Connect(ctx, r.h.Peerstore().PeerInfo(r.h.ID())); err != nil {
			t.Fatal(err)
		}
	}
	put("/k4")
	if err := a.r.Announce(ctx); err != nil {
		t.Fatal(err)
	}
	waitHas(t, j, "/k4", 20*time.Second)
	// The provider finishes its walk (its own recovery) ...
	if err := p.r.Announce(ctx); err != nil {
		t.Fatal(err)
	}
	waitHas(t, p, "/k1", 30*time.Second)
	// ... and the joiner must converge with the others.
	waitHas(t, j, "/k1", 30*time.Second)
}
