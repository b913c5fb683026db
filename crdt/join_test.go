package crdt_test

// Tests from the review of a1b4825, whose join announcements were left out
// when another peer had announced the same heads (taken out since): they
// fail on it. A join announcement must reach a newcomer whatever the other
// peers announced.

import (
	"context"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/crdt"
)

func rebroadcast(d time.Duration) func(*crdt.Params) {
	return func(p *crdt.Params) { p.RebroadcastInterval = d }
}

func timeHas(r *replica, key string, within time.Duration) time.Duration {
	ctx := context.Background()
	start := time.Now()
	for time.Since(start) < within {
		if has, _ := r.r.Has(ctx, ds.NewKey(key)); has {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1
}

// R and P are converged (one head). A newcomer N connects to R only; at the
// same moment another newcomer Q connects to P only (a heal: each side
// gets a join). P answers its join first; R hears P's announcement after
// its own last join and keeps quiet. N is a topic peer of R but not yet in
// R's GossipSub mesh (grafting waits for a heartbeat), so R does not
// forward P's announcement to it, and nothing else announces R's heads to
// N until go-ds-crdt's rebroadcast, which skips heads it saw announced:
// R must answer N's join itself (within a second, not after rebroadcasts).
func TestNewcomerOnASubsetGetsTheHeadsAtOnce(t *testing.T) {
	bothWays(t, newcomerOnASubset)
}

// bothWays runs test with joins answered by broadcasts and on streams.
func bothWays(t *testing.T, test func(*testing.T, func(*crdt.Params))) {
	t.Run("broadcast", func(t *testing.T) { test(t, func(*crdt.Params) {}) })
	t.Run("streams", func(t *testing.T) { test(t, withStreams) })
}

func newcomerOnASubset(t *testing.T, mode func(*crdt.Params)) {
	const interval = 2 * time.Second
	ctx := context.Background()
	var worst time.Duration
	lost := 0
	for trial := range 3 {
		r := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
		p := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
		key := fmt.Sprint("/k", trial)
		if err := r.r.Put(ctx, ds.NewKey(key), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := p.h.Connect(ctx, r.h.Peerstore().PeerInfo(r.h.ID())); err != nil {
			t.Fatal(err)
		}
		waitHas(t, p, key, 10*time.Second)
		time.Sleep(1500 * time.Millisecond) // R and P meshed, the join answers done
		n := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
		q := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
		// Q joins P a little before N joins R: P's answer comes after R's
		// last join, before R's own timer.
		if err := q.h.Connect(ctx, p.h.Peerstore().PeerInfo(p.h.ID())); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
		start := time.Now()
		if err := n.h.Connect(ctx, r.h.Peerstore().PeerInfo(r.h.ID())); err != nil {
			t.Fatal(err)
		}
		d := timeHas(n, key, 15*time.Second)
		if d >= 0 {
			d = time.Since(start)
		}
		t.Logf("trial %d: newcomer had the head after %v", trial, d)
		if d < 0 || d > time.Second {
			lost++
		}
		if d < 0 {
			d = 15 * time.Second
		}
		worst = max(worst, d)
		n.close()
		q.close()
		r.close()
		p.close()
	}
	if lost > 0 {
		t.Fatalf("%d/3 newcomers waited past the join announcement; worst %v (rebroadcast interval %v)", lost, worst, interval)
	}
}

// R and three peers P1..P3 converged; N admits only R (Params.Member).
// Had R been silenced by a P's join answer, N would wait on R's go-ds-crdt
// rebroadcast, which R skips in every interval in which one of the Ps
// rebroadcast the heads: with several Ps, R would hardly ever speak again.
func TestNewcomerAdmittingOnePeerGetsTheHeads(t *testing.T) {
	bothWays(t, newcomerAdmittingOnePeer)
}

func newcomerAdmittingOnePeer(t *testing.T, mode func(*crdt.Params)) {
	const interval = 2 * time.Second
	ctx := context.Background()
	r := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
	if err := r.r.Put(ctx, ds.NewKey("/k"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	var ps []*replica
	for range 3 {
		p := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
		if err := p.h.Connect(ctx, r.h.Peerstore().PeerInfo(r.h.ID())); err != nil {
			t.Fatal(err)
		}
		for _, o := range ps {
			if err := p.h.Connect(ctx, o.h.Peerstore().PeerInfo(o.h.ID())); err != nil {
				t.Fatal(err)
			}
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		waitHas(t, p, "/k", 10*time.Second)
	}
	time.Sleep(1500 * time.Millisecond)
	rid := r.h.ID()
	var n *replica
	n = openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode, func(pp *crdt.Params) {
		pp.Member = func(id peer.ID) bool { return id == rid || (n != nil && id == n.h.ID()) }
	})
	q := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, rebroadcast(interval), mode)
	if err := q.h.Connect(ctx, ps[0].h.Peerstore().PeerInfo(ps[0].h.ID())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(25 * time.Millisecond)
	start := time.Now()
	if err := n.h.Connect(ctx, r.h.Peerstore().PeerInfo(r.h.ID())); err != nil {
		t.Fatal(err)
	}
	d := timeHas(n, "/k", 20*time.Second)
	t.Logf("newcomer had the head after %v (-1: never)", d)
	if d < 0 || time.Since(start) > time.Second {
		t.Fatalf("newcomer waited %v (-1: >20s) for a head R holds; rebroadcast interval %v", d, interval)
	}
}
