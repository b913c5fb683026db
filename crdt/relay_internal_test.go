package crdt

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

func testCid(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.DagProtobuf, h)
}

// After a partition heals every peer learns the other side's heads on
// streams, and each relayed all of them to the whole topic. A head two
// other peers announced on the topic since is left out: c1 heard from b
// and c after it was queued, c3 before. c2, announced by b alone (twice),
// and c4, announced by this replica itself and by b, go out.
func TestRelayLeavesOutHeadsTheTopicAnnounced(t *testing.T) {
	d := newDirect(nil, "relay-test", nil, slog.New(slog.DiscardHandler))
	d.self = "me"
	d.topic = func() []peer.ID { return []peer.ID{"a", "b", "c"} }
	d.links = func(cid.Cid) []cid.Cid { return nil }
	c1, c2, c3, c4 := testCid(t, "1"), testCid(t, "2"), testCid(t, "3"), testCid(t, "4")
	d.heard("b", []cid.Cid{c3, c2})
	d.heard("c", []cid.Cid{c3})
	d.heard("b", []cid.Cid{c2})
	d.heard("me", []cid.Cid{c4})
	d.heard("b", []cid.Cid{c4})
	d.relay(c1, "a")
	d.relay(c2, "a")
	d.relay(c3, "a")
	d.relay(c4, "a")
	d.heard("b", []cid.Cid{c1})
	d.heard("c", []cid.Cid{c1})

	sent := make(chan []cid.Cid, 4)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go d.relayLoop(ctx, &wg, func(_ context.Context, b []byte) error {
		var msg pb.CRDTBroadcast
		if err := proto.Unmarshal(b, &msg); err != nil {
			t.Error(err)
		}
		var heads []cid.Cid
		for _, h := range msg.Heads {
			c, err := cid.Cast(h.Cid)
			if err != nil {
				t.Error(err)
			}
			heads = append(heads, c)
		}
		sent <- heads
		return nil
	})
	var got []cid.Cid
	select {
	case got = <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("no relay in 10 s")
	}
	cancel()
	wg.Wait()
	close(sent)
	for more := range sent {
		got = append(got, more...)
	}
	slices.SortFunc(got, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	want := []cid.Cid{c2, c4}
	slices.SortFunc(want, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	if !slices.Equal(got, want) {
		t.Fatalf("relayed %v, want c2 and c4 %v (c1 %v and c3 %v were announced on the topic by two peers)", got, want, c1, c3)
	}
	if n := d.relaySpared.Load(); n != 2 {
		t.Fatalf("spared %d relays, want 2", n)
	}
}

// The random part of a relay's wait grows with the topic's peers, up to
// relaySpreadMax, and a relay waits relayEvery after the last one.
func TestRelayDelay(t *testing.T) {
	for range 100 {
		if d := relayDelay(0, time.Time{}); d != relayWait {
			t.Fatalf("no peers: %v, want %v", d, relayWait)
		}
		if d := relayDelay(3, time.Time{}); d < relayWait || d >= relayWait+3*relaySpreadPer {
			t.Fatalf("3 peers: %v, want [%v, %v)", d, relayWait, relayWait+3*relaySpreadPer)
		}
		if d := relayDelay(1000, time.Time{}); d < relayWait || d >= relayWait+relaySpreadMax {
			t.Fatalf("1,000 peers: %v, want [%v, %v)", d, relayWait, relayWait+relaySpreadMax)
		}
		last := time.Now()
		d := relayDelay(3, last)
		if took := time.Since(last); d < relayEvery-took || d > relayEvery {
			t.Fatalf("just after a relay: %v, want %v less the %v the call took", d, relayEvery, took)
		}
	}
}
