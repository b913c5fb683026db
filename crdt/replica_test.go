package crdt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	ipfslite "github.com/hsanjuan/ipfs-lite"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/host"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

type replica struct {
	h      host.Host
	r      *crdt.Replica
	dag    *ipfslite.Peer
	cancel context.CancelFunc
}

func newReplica(t *testing.T) *replica {
	t.Helper()
	// No prefetcher (Has unset): announced heads go to go-ds-crdt as they come.
	return openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.Has = nil })
}

func (r *replica) close() {
	_ = r.r.Close()
	r.cancel()
	_ = r.dag.BlockService().Close()
	_ = r.h.Close()
}

// Two replicas that wrote while apart converge as soon as they connect,
// though go-ds-crdt's own rebroadcast is an hour away: each announces its
// heads when the other joins the topic.
func TestHeadsAnnouncedOnJoin(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	a, b := newReplica(t), newReplica(t)
	for i := 0; i < 10; i++ {
		if err := a.r.Put(ctx, ds.NewKey(fmt.Sprint("a", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := b.r.Put(ctx, ds.NewKey(fmt.Sprint("b", i)), []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := a.h.Connect(ctx, b.h.Peerstore().PeerInfo(b.h.ID())); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/a9", "/b9", "/a0", "/b0"} {
		for _, r := range []*replica{a, b} {
			deadline := time.Now().Add(20 * time.Second)
			for {
				has, err := r.r.Has(ctx, ds.NewKey(k))
				if err != nil {
					t.Fatal(err)
				}
				if has {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never arrived (heads %d)", k, r.r.Heads(ctx))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	t.Logf("converged %v after connecting", time.Since(start))
	a.close()
	b.close()
}
