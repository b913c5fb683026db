package crdt_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/internal/seal"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

type reasons struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *reasons) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[reason]++
}

func (r *reasons) get(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[reason]
}

func randomHead(t *testing.T, codec uint64) *pb.Head {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	mh, err := multihash.Sum(b, multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Head{Cid: cid.NewCidV1(codec, mh).Bytes()}
}

// A peer announcing heads nobody has, by the thousand, and malformed
// announcements, holds up nothing: the topic's validator rejects what is
// malformed, rate-limits the announcer, and the prefetcher fetches at most
// a couple of its heads at a time, so an honest replica's head still gets
// through at once. Without the limits the bogus heads fill the prefetch
// queue and the honest announcement is dropped.
func TestBogusHeadAnnouncementsHoldUpNothing(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	seen := &reasons{n: map[string]int{}}
	victim := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, func(p *crdt.Params) { p.OnReject = seen.add })
	honest := openOn(t, dssync.MutexWrap(ds.NewMapDatastore()), nil)
	if err := honest.h.Connect(ctx, victim.h.Peerstore().PeerInfo(victim.h.ID())); err != nil {
		t.Fatal(err)
	}

	topic, _, stop := headAttacker(t, victim)
	defer stop()

	publish := func(heads ...*pb.Head) {
		t.Helper()
		b, err := proto.Marshal(&pb.CRDTBroadcast{Heads: heads})
		if err != nil {
			t.Fatal(err)
		}
		if err := topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := topic.Publish(ctx, []byte("not an announcement")); err != nil {
		t.Fatal(err)
	}
	publish(randomHead(t, cid.Raw))
	// 40 announcements of 50 heads nobody has: 2,000 fetches of 10 s each.
	for range 40 {
		heads := make([]*pb.Head, 50)
		for i := range heads {
			heads[i] = randomHead(t, cid.DagProtobuf)
		}
		publish(heads...)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The first two are refused at once; the rest go through the rate
	// limit, which the attacker passes only for its burst.
	waitFor("the malformed announcements rejected and the flood limited", func() bool {
		return seen.get("heads_decode") == 1 && seen.get("heads_cid") == 1 && seen.get("heads_rate") > 0
	})

	if err := honest.r.Put(ctx, ds.NewKey("/honest"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitHas(t, victim, "/honest", 15*time.Second) // without the limits: never (its announcement dropped, the next an hour away)
	t.Logf("the honest head arrived %v after its write", time.Since(start))
	victim.close()
	honest.close()
}

// With Params.Key, on a GossipSub that signs nothing (as a node runs it),
// announcements are sealed by their announcer: replicas still sync, and an
// announcement without a seal, sealed for another topic, or sealed by a
// peer Member refuses, moves nothing (counted by reason).
func TestSealedHeadAnnouncements(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	ctx := context.Background()
	seen := &reasons{n: map[string]int{}}
	honest := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true)
	member := honest.h.ID()
	victim := openWith(t, dssync.MutexWrap(ds.NewMapDatastore()), nil, true, func(p *crdt.Params) {
		p.OnReject = seen.add
		p.Member = func(id peer.ID) bool { return id == member }
	})
	if err := honest.h.Connect(ctx, victim.h.Peerstore().PeerInfo(victim.h.ID())); err != nil {
		t.Fatal(err)
	}
	if err := honest.r.Put(ctx, ds.NewKey("/first"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitHas(t, victim, "/first", 15*time.Second)

	topic, key, stop := headAttacker(t, victim, noSign()...)
	defer stop()
	b, err := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{randomHead(t, cid.DagProtobuf)}})
	if err != nil {
		t.Fatal(err)
	}
	otherTopic, err := seal.Seal(key, "another-topic", b)
	if err != nil {
		t.Fatal(err)
	}
	own, err := seal.Seal(key, "test-heads", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{b, otherTopic, own} {
		if err := topic.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for seen.get("heads_seal") != 2 || seen.get("heads_not_member") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("refused: seal %d, not member %d; want 2 and 1", seen.get("heads_seal"), seen.get("heads_not_member"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := honest.r.Put(ctx, ds.NewKey("/second"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitHas(t, victim, "/second", 15*time.Second)
	victim.close()
	honest.close()
}

// headAttacker is a bare libp2p peer with GossipSub (opts besides flood
// publish) on the test's heads topic, in victim's topic mesh. It returns
// the topic, its key, and what stops it (before the test checks for
// leaks).
func headAttacker(t *testing.T, victim *replica, opts ...pubsub.Option) (*pubsub.Topic, crypto.PrivKey, func()) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ps, err := pubsub.NewGossipSub(ctx, h, append(opts, pubsub.WithFloodPublish(true))...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join("test-heads")
	if err != nil {
		t.Fatal(err)
	}
	stop := func() { _ = topic.Close(); cancel(); _ = h.Close() }
	if err := h.Connect(ctx, victim.h.Peerstore().PeerInfo(victim.h.ID())); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(topic.ListPeers()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return topic, h.Peerstore().PrivKey(h.ID()), stop
}
