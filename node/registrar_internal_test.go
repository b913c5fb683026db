package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/node/nodetest"
)

// TestRegistrarDeletesOnlyWhatItJudged: the registrar judges entries from
// a read of the set and deletes the stale ones after; a write that lands
// in between (a group member's left entry, put while the read was on its
// way) must survive the delete. Deleting by key took the newer entry with
// the judged one: a left entry, kept 10 leases for the others to read the
// member's final mark, was gone 0.9 s after the leave in a loaded run of
// TestGroupLeftEntryOutlivesALaggingRead. With an unconditional delete in
// deleteIfUnchanged this test fails at its first check.
func TestRegistrarDeletesOnlyWhatItJudged(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...) })
	ctx := context.Background()
	n, err := New(ctx, Config{Mesh: fmt.Sprintf("registrar-%d", time.Now().UnixNano()),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	member, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	// Entries of another peer, valid and far from expiry: the node's own
	// registrar, reading the set meanwhile, keeps them.
	entry := func(left bool) []byte {
		b, err := json.Marshal(SubscriptionInfo{Peer: member.String(), ID: "group.g", Pattern: "order.**", Name: "group.g", Group: "g",
			Strategy: "hash:subject", Lease: time.Hour, Expires: time.Now().Add(time.Hour), Left: left})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := subKey(member.String(), "group.g")
	live, left := entry(false), entry(true)
	if err := n.subset.Put(ctx, key, live); err != nil {
		t.Fatal(err)
	}
	// The registrar read live and judged it stale; the left entry lands
	// before its delete.
	if err := n.subset.Put(ctx, key, left); err != nil {
		t.Fatal(err)
	}
	if err := n.deleteIfUnchanged(key, live); err != nil {
		t.Fatal(err)
	}
	if got, err := n.subset.Get(ctx, key); err != nil || string(got) != string(left) {
		t.Fatalf("after a delete judged on the entry it replaced, the left entry reads %q (err %v)", got, err)
	}
	// Judged on what the set still holds: deleted.
	if err := n.deleteIfUnchanged(key, left); err != nil {
		t.Fatal(err)
	}
	if has, err := n.subset.Has(ctx, key); err != nil || has {
		t.Fatalf("a stale entry unchanged since the read is still there (err %v)", err)
	}
	// Gone already (another replica's delete came first): nothing to do.
	if err := n.deleteIfUnchanged(key, left); err != nil {
		t.Fatalf("deleting an entry that is gone: %v", err)
	}
}
