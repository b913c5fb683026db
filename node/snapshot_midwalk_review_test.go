package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/node"
)

// slowMarks delays go-ds-crdt's "block merged" marks: a slow walk (a
// provider catching up on the journal, fetching block after block).
type slowMarks struct{ ds.Batching }

func slow(k ds.Key) {
	if strings.HasPrefix(k.String(), "/blocks/") {
		time.Sleep(150 * time.Millisecond)
	}
}

func (s slowMarks) Put(ctx context.Context, k ds.Key, v []byte) error {
	slow(k)
	return s.Batching.Put(ctx, k, v)
}

type reviewSlowBatch struct{ ds.Batch }

func (b reviewSlowBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	slow(k)
	return b.Batch.Put(ctx, k, v)
}

func (s slowMarks) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return reviewSlowBatch{b}, nil
}

// Review: a provider that is still walking the journal DAG (it has merged
// and marked the top blocks of a branch, not yet the ones below) serves a
// snapshot whose block list covers the top blocks only. The joiner marks
// them merged, so go-ds-crdt's walk of any later head stops there: the
// entries of the blocks below never reach the joiner, although the
// provider has them a moment later. The joiner's journal stays short for
// good (and the delivered marks it took count them as delivered).
func TestReviewSnapshotFromAProviderStillWalking(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	hub := cluster(t, 1, nil)[0]
	for i := 0; i < 40; i++ { // 40 journal blocks, one per call
		if err := hub.Publish(ctx, mustSignal(t, "old.x"), mustSignal(t, "old.x")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the hub's journal", func() bool {
			c, _, err := hub.JournalDigest(ctx)
			return err == nil && c == 2*(i+1)
		})
	}
	node.SetTestWrapStore(func(b ds.Batching) ds.Batching { return slowMarks{b} })
	p, err := node.New(ctx, node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{hub.AddrInfo()}, Logger: testLogger(t)})
	node.SetTestWrapStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eventually(t, 30*time.Second, "the provider's walk under way", func() bool {
		c, _, err := p.JournalDigest(ctx)
		return err == nil && c > 0
	})
	t.Logf("provider's journal when first seen: %d", func() int { c, _, _ := p.JournalDigest(ctx); return c }())
	before, _, _ := p.JournalDigest(ctx)
	j, err := node.New(ctx, node.Config{Mesh: hub.Mesh(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{p.AddrInfo()}, SnapshotJoin: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	at, _, _ := j.JournalDigest(ctx)
	t.Logf("provider held %d entries when asked; the joiner started with %d", before, at)
	if err := j.Connect(ctx, hub.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if err := hub.Publish(ctx, mustSignal(t, "new.after")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the provider's whole journal", func() bool {
		c, _, err := p.JournalDigest(ctx)
		return err == nil && c == 81
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, _, err := j.JournalDigest(ctx)
		if err == nil && c == 81 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the joiner's journal holds %d entries 30 s after the provider's and the hub's hold 81", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
