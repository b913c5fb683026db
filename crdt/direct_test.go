package crdt_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

func putN(t *testing.T, r *replica, prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := r.r.Put(context.Background(), ds.NewKey(fmt.Sprint(prefix, i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
}

func connect(t *testing.T, a, b *replica) {
	t.Helper()
	if err := a.h.Connect(context.Background(), b.h.Peerstore().PeerInfo(b.h.ID())); err != nil {
		t.Fatal(err)
	}
}

// Two replicas that wrote while apart, with Params.Host: their heads go
// on streams when they join (go-ds-crdt's rebroadcast is an hour away, so
// nothing else can bring them), and no stream fails.
func TestJoinHeadsSentOnStreams(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	a := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	b := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, a, "/a", 5)
	putN(t, b, "/b", 5)
	connect(t, a, b)
	waitHas(t, a, "/b4", 10*time.Second)
	waitHas(t, b, "/a4", 10*time.Second)
	for _, r := range []*replica{a, b} {
		st := r.r.Direct()
		if st.Sent == 0 || st.Received == 0 || st.Failed != 0 {
			t.Errorf("direct announcements %+v: want some sent and received, none failed", st)
		}
	}
	a.close()
	b.close()
}

// A hub H and an edge E1 are converged. E2 wrote while away and comes
// back connected to H alone: H learns E2's heads on a stream and must
// pass them on to E1 itself (E1 never hears from E2, and go-ds-crdt's
// rebroadcast is an hour away).
func TestHeadsFromAStreamRelayedToOtherPeers(t *testing.T) {
	h := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	e1 := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	e2 := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, h, "/h", 3)
	connect(t, e1, h)
	waitHas(t, e1, "/h2", 10*time.Second)
	putN(t, e2, "/e", 3)
	connect(t, e2, h)
	waitHas(t, h, "/e2", 10*time.Second)
	t.Logf("hub %+v", h.r.Direct())
	waitHas(t, e1, "/e2", 10*time.Second)
	waitHas(t, e2, "/h2", 10*time.Second)
}

// A replica with Params.Host meets one without (an older version): the
// stream fails, and the heads go to the topic instead.
func TestJoinHeadsFallBackToTheTopic(t *testing.T) {
	a := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	b := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true)
	putN(t, a, "/a", 3)
	putN(t, b, "/b", 3)
	connect(t, a, b)
	waitHas(t, b, "/a2", 10*time.Second)
	waitHas(t, a, "/b2", 10*time.Second)
	if st := a.r.Direct(); st.Failed == 0 {
		t.Errorf("direct announcements %+v: the stream to a peer without the protocol should have failed", st)
	}
}

// A peer writes hostile announcements on the heads stream: each is
// refused and counted, and the replica still converges with an honest
// peer afterwards.
func TestHostileHeadsOnAStream(t *testing.T) {
	var mu sync.Mutex
	rejected := map[string]int{}
	onReject := func(p *crdt.Params) {
		p.OnReject = func(reason string) { mu.Lock(); rejected[reason]++; mu.Unlock() }
	}
	v := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, onReject)
	bad := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true)
	connect(t, bad, v)
	proto1 := protocol.ID("/signalmesh/heads/1.0.0/test-heads")
	badCID, _ := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: []byte("not a cid")}}})
	cases := []struct {
		reason string
		data   []byte
	}{
		{"heads_decode", bytes.Repeat([]byte{0xff}, 70<<10)}, // over the size limit
		{"heads_decode", []byte{0x0a, 0xff}},                 // not a protobuf
		{"heads_cid", badCID},
	}
	ctx := context.Background()
	for _, c := range cases {
		s, err := bad.h.NewStream(ctx, v.h.ID(), proto1)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write(c.data)
		_ = s.Close()
	}
	want := map[string]int{"heads_decode": 2, "heads_cid": 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		ok := rejected["heads_decode"] >= want["heads_decode"] && rejected["heads_cid"] >= want["heads_cid"]
		got := fmt.Sprint(rejected)
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections %s, want at least %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := v.r.Direct(); st.Received != 0 {
		t.Errorf("hostile announcements taken: %+v", st)
	}
	honest := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, honest, "/o", 2)
	connect(t, honest, v)
	waitHas(t, v, "/o1", 10*time.Second)
}

// Params.Member refuses heads on a stream from a peer it does not admit.
func TestHeadsOnAStreamFromANonMember(t *testing.T) {
	var mu sync.Mutex
	rejected := map[string]int{}
	var only peer.ID
	v := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams, func(p *crdt.Params) {
		p.OnReject = func(reason string) { mu.Lock(); rejected[reason]++; mu.Unlock() }
		p.Member = func(id peer.ID) bool { mu.Lock(); defer mu.Unlock(); return id == only }
	})
	mu.Lock()
	only = v.h.ID()
	mu.Unlock()
	stranger := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, withStreams)
	putN(t, stranger, "/s", 2)
	connect(t, stranger, v)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := rejected["heads_not_member"]
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stranger's heads were not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if has, _ := v.r.Has(context.Background(), ds.NewKey("/s1")); has {
		t.Fatal("merged a non-member's heads")
	}
}
