package crdt_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh/crdt"
)

const headsProto = protocol.ID("/signalmesh/heads/1.0.0/test-heads")

// Four members each write and send each new head to the hub H on a
// stream every 16 ms (each within its 64 heads/s). Meanwhile a newcomer N
// joins H; E1 (connected to H alone) must get N's heads from H's relay.
// relayLoop re-armed its 20 ms timer on every relayed head, with no cap, so
// a steady stream of direct heads held relays back; each batch that did
// go out carried every superseded head too, and E1 dropped past 64 of
// them (151-354 dropped): 2-8 relays in 4 s. Now H relays every
// relayEvery and E1 gets N's heads while the trickle runs (how fast
// depends on how fast E1 walks H's 250 heads a second: 0.1 s alone, up to
// 5 s beside the package's other tests).
func TestRelayStarvedByASteadyTrickle(t *testing.T) {
	ctx := context.Background()
	h := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	var fromH atomic.Int64
	var hid atomic.Value
	hid.Store(peer.ID(""))
	var rmu sync.Mutex
	rejects := map[string]int{}
	e1 := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, func(p *crdt.Params) {
		p.Member = func(id peer.ID) bool {
			if id == hid.Load().(peer.ID) {
				fromH.Add(1)
			}
			return true
		}
		p.OnReject = func(r string) { rmu.Lock(); rejects[r]++; rmu.Unlock() }
	})
	hid.Store(h.h.ID())
	putN(t, h, "/h", 2)
	connect(t, e1, h)
	waitHas(t, e1, "/h1", 10*time.Second)
	// The Ms run their replicas on another topic: H hears their heads only
	// on streams.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range 4 {
		m := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) { p.Topic = "other" })
		connect(t, m, h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(16 * time.Millisecond): // 62.5 heads/s: within its rate (64/s)
				}
				if err := m.r.Put(ctx, ds.NewKey(fmt.Sprint("/m", k, "/", i)), []byte("v")); err != nil {
					return
				}
				var msg pb.CRDTBroadcast
				for _, c := range m.r.InternalStats(ctx).Heads {
					msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
				}
				b, _ := proto.Marshal(&msg)
				s, err := m.h.NewStream(ctx, h.h.ID(), headsProto)
				if err != nil {
					continue
				}
				_, _ = s.Write(b)
				_ = s.Close()
			}
		}()
	}
	defer func() {
		if stop != nil {
			close(stop)
			wg.Wait()
		}
	}()
	time.Sleep(time.Second) // the trickle is under way

	n := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, n, "/n", 2)
	connect(t, n, h)
	waitHas(t, h, "/n1", 5*time.Second)
	start, before := time.Now(), fromH.Load()
	got := within(e1, "/n1", 10*time.Second)
	took := time.Since(start)
	relays := fromH.Load() - before
	t.Logf("E1 got N's heads %v after H had them; E1 saw %d announcements of H's meanwhile", took, relays)
	close(stop)
	wg.Wait()
	stop = nil
	perSecond := float64(relays) / max(took, time.Second).Seconds()
	if !got || perSecond < 3 {
		_, dropped := e1.r.HeadFetches()
		t.Fatalf("E1 got N's heads: %v in 10 s while the trickle ran; H's relays %.1f a second (want at least 3: one per relayEvery); H direct %+v, E1 dropped %d (superseded heads: not a loss), rejects %v",
			got, perSecond, h.r.Direct(), dropped, rejects)
	}
}

func within(r *replica, key string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if has, _ := r.r.Has(context.Background(), ds.NewKey(key)); has {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// A fresh, empty peer N joins a converged pair H–E1 through H. N has
// nothing anyone lacks, yet it fetches H's heads (learned on H's stream)
// and then "relays" them to the whole topic: every join of a peer that is
// behind costs a topic-wide broadcast, which is what the commit set out to
// remove (in a heal, every peer of each side relays the other side's heads).
// E1's Member is asked about every announcement that reaches it; N is
// never connected to E1, so any question about N is a topic message of N's.
func TestNewcomerRelaysTheHubsHeadsBackToTheTopic(t *testing.T) {
	var fromN atomic.Int64
	var nid atomic.Value
	nid.Store(peer.ID(""))
	h := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	e1 := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, func(p *crdt.Params) {
		p.Member = func(id peer.ID) bool {
			if id == nid.Load().(peer.ID) {
				fromN.Add(1)
			}
			return true
		}
	})
	putN(t, h, "/h", 3)
	connect(t, e1, h)
	waitHas(t, e1, "/h2", 10*time.Second)
	time.Sleep(time.Second)
	n := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	nid.Store(n.h.ID())
	connect(t, n, h)
	waitHas(t, n, "/h2", 10*time.Second)
	time.Sleep(2 * time.Second)
	if got := fromN.Load(); got != 0 {
		t.Fatalf("the empty newcomer broadcast %d announcement(s) of heads everyone had to the whole topic", got)
	}
}

// A peer opens a heads stream to V and writes nothing. V's Replica.Close
// returns, yet the stream handler (a goroutine Close neither owns nor
// waits for) lives on until its 5 s read deadline, and then calls
// Params.OnReject after Close.
func TestStreamHandlerOutlivesClose(t *testing.T) {
	var closed atomic.Bool
	var after atomic.Int64
	v := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, func(p *crdt.Params) {
		p.OnReject = func(string) {
			if closed.Load() {
				after.Add(1)
			}
		}
	})
	bad := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true)
	connect(t, bad, v)
	s, err := bad.h.NewStream(context.Background(), v.h.ID(), headsProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	_, _ = s.Write([]byte{0x0a}) // negotiates; the body never ends
	time.Sleep(300 * time.Millisecond)
	if err := v.r.Close(); err != nil {
		t.Fatal(err)
	}
	closed.Store(true)
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	alive := strings.Contains(stacks, "(*direct).handle")
	time.Sleep(6 * time.Second)
	if alive || after.Load() > 0 {
		t.Fatalf("after Close: handler goroutine alive %v, OnReject calls %d", alive, after.Load())
	}
}

// counter returns a Params option whose Member counts the announcements
// that reach the replica from *who (topic and stream alike).
func counter(who *atomic.Value, n *atomic.Int64) func(*crdt.Params) {
	who.Store(peer.ID(""))
	return func(p *crdt.Params) {
		p.Member = func(id peer.ID) bool {
			if id == who.Load().(peer.ID) {
				n.Add(1)
			}
			return true
		}
	}
}

// Heads nobody can serve, sent on a stream to a hub: never relayed.
func TestUnservableHeadsFromAStreamNotRelayed(t *testing.T) {
	var who atomic.Value
	var seen atomic.Int64
	h := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	e1 := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, counter(&who, &seen))
	who.Store(h.h.ID())
	putN(t, h, "/h", 1)
	connect(t, e1, h)
	waitHas(t, e1, "/h0", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	base := seen.Load()
	bad := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) { p.Topic = "other" })
	connect(t, bad, h)
	var msg pb.CRDTBroadcast
	for i := range 50 {
		nd := dagNode(fmt.Sprint("ghost", i))
		msg.Heads = append(msg.Heads, &pb.Head{Cid: nd.Bytes()})
	}
	b, _ := proto.Marshal(&msg)
	s, err := bad.h.NewStream(context.Background(), h.h.ID(), headsProto)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write(b)
	_ = s.Close()
	time.Sleep(3 * time.Second)
	if got := seen.Load() - base; got != 0 || h.r.Direct().Received != 2 && h.r.Direct().Received != 1 {
		t.Fatalf("H announced %d times after unservable heads; direct %+v", got, h.r.Direct())
	}
}

// Many idle streams from one peer do not keep an honest peer's heads out.
func TestIdleStreamsDoNotBlockHonestJoins(t *testing.T) {
	v := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	bad := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) { p.Topic = "other" })
	connect(t, bad, v)
	opened := 0
	for range 1000 {
		s, err := bad.h.NewStream(context.Background(), v.h.ID(), headsProto)
		if err != nil {
			break
		}
		if _, err := s.Write([]byte{0x0a}); err != nil {
			break
		}
		defer s.Reset()
		opened++
	}
	t.Logf("idle streams opened: %d", opened)
	honest := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, honest, "/o", 2)
	connect(t, honest, v)
	waitHas(t, v, "/o1", 3*time.Second)
	waitHas(t, honest, "/o1", time.Second)
}

// A peer that joins and leaves before the 50 ms join timer: the stream to
// it fails, and the replica broadcasts its heads to the whole topic.
func TestFallbackOnAPeerThatLeft(t *testing.T) {
	var who atomic.Value
	var seen atomic.Int64
	a := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	obs := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, counter(&who, &seen))
	who.Store(a.h.ID())
	putN(t, a, "/a", 1)
	connect(t, obs, a)
	waitHas(t, obs, "/a0", 10*time.Second)
	time.Sleep(time.Second)
	base := seen.Load()
	for range 5 {
		p := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
		connect(t, p, a)
		time.Sleep(15 * time.Millisecond)
		p.close()
		time.Sleep(200 * time.Millisecond)
	}
	if got := seen.Load() - base; got != 0 {
		t.Fatalf("5 peers that came and went made A broadcast its heads to the whole topic %d times (direct %+v)", got, a.r.Direct())
	}
}

// Joins racing Close: no panic, no race, nothing after Close.
func TestJoinWhileClosing(t *testing.T) {
	for range 5 {
		a := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
		putN(t, a, "/a", 1)
		var ps []*replica
		for range 4 {
			p := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
			putN(t, p, "/p", 1)
			ps = append(ps, p)
		}
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); _ = p.h.Connect(context.Background(), a.h.Peerstore().PeerInfo(a.h.ID())) }()
		}
		time.Sleep(40 * time.Millisecond)
		_ = a.r.Close()
		wg.Wait()
		for _, p := range ps {
			_ = p.r.Close()
		}
	}
}

func dagNode(data string) cid.Cid {
	nd := merkledag.NodeWithData([]byte(data))
	_ = nd.SetCidBuilder(merkledag.V1CidPrefix())
	return nd.Cid()
}
