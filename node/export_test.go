package node

import (
	"context"
	"os"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// SIGNALMESH_TEST_NOVERIFY=1 turns signature and journal-entry checks off,
// to show what the hostile tests' attacks do without them.
func init() { testNoVerify = os.Getenv("SIGNALMESH_TEST_NOVERIFY") != "" }

// SetTestWrapStore wraps the store of every node started after it (tests
// only: set it before starting nodes, reset it to nil in a cleanup).
func SetTestWrapStore(wrap func(ds.Batching) ds.Batching) { testWrapStore = wrap }

// SetTestCrashClose makes Close leave what a kill -9 would (no adoption,
// no hand-off): the durable parts are what they were.
func SetTestCrashClose(on bool) { testCrashClose.Store(on) }

// JournalPut writes a raw entry into the node's replicated journal, as a
// hostile member could (tests only).
func (n *Node) JournalPut(ctx context.Context, key ds.Key, value []byte) error {
	return n.repl.Put(ctx, key, value)
}

// JournalDelete deletes a raw entry of the node's replicated journal
// (tests only).
func (n *Node) JournalDelete(ctx context.Context, key ds.Key) error { return n.repl.Delete(ctx, key) }

// JournalGet reads a raw entry of the node's replicated journal.
func (n *Node) JournalGet(ctx context.Context, key ds.Key) ([]byte, error) {
	return n.repl.Get(ctx, key)
}

// Key is the node's private key (tests only).
func (n *Node) Key() crypto.PrivKey { return n.key }

// StartRead is how many journal entries the node's start read (a clean
// reopen reads none but what was journaled and not delivered).
func (n *Node) StartRead() int64 { return n.startRead }

// CloseAsCrash closes the node leaving what a kill -9 would: no hand-off,
// no adoption, its consumer group members leave no final mark (their
// leases run out). Tests only.
func (n *Node) CloseAsCrash() error {
	n.crash.Store(true)
	return n.Close()
}

// RegistryPut writes a raw entry into the node's replicated subscription
// set, as a hostile member could (tests only).
func (n *Node) RegistryPut(ctx context.Context, key ds.Key, value []byte) error {
	return n.subset.Put(ctx, key, value)
}

// RegistryHas reports whether the node's replica of the subscription set
// holds key (tests only).
func (n *Node) RegistryHas(ctx context.Context, key ds.Key) (bool, error) {
	return n.subset.Has(ctx, key)
}

// Waiting reports whether the node's loop waits for room in the queue of
// this OverflowBlock subscription (tests only).
func (s *Subscription) Waiting() bool { return s.waiting.Load() }

// SetKey is the subscription's key in the replicated subscription set
// (tests only).
func (s *Subscription) SetKey() ds.Key { return subKey(s.info.Peer, s.info.ID) }

// HeardLeft reports whether the node received, in a lease message, the
// left entry (a group member's leave) of key (tests only).
func (n *Node) HeardLeft(key ds.Key) bool {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	g, ok := n.reg.gossiped[key.String()]
	if !ok {
		return false
	}
	e, err := parseEntry(key.String(), g.value)
	return err == nil && e.sub != nil && e.sub.Left
}

// SetBacklogRetry sets the wait before a backlog's first read again (0:
// the default) and returns a function that puts it back.
func SetBacklogRetry(d time.Duration) func() {
	old := backlogRetry
	if d > 0 {
		backlogRetry = d
	}
	return func() { backlogRetry = old }
}

// JournalBatch writes puts and deletes as one journal block (a delta with
// both elements and tombstones), as a hostile member could (tests only).
func (n *Node) JournalBatch(ctx context.Context, puts map[ds.Key][]byte, deletes []ds.Key) error {
	b, err := n.repl.Batch(ctx)
	if err != nil {
		return err
	}
	for k, v := range puts {
		if err := b.Put(ctx, k, v); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		if err := b.Delete(ctx, k); err != nil {
			return err
		}
	}
	return b.Commit(ctx)
}

// LastHeard is when p's announcement and its fresh lease message last
// reached the node (zero: not since it started; tests only).
func (n *Node) LastHeard(p peer.ID) (announced, renewed time.Time) {
	return n.announced.last(p), n.renewed.last(p)
}

func (d *peerTimes) last(p peer.ID) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.at[p]
}

// HeardLive reports whether the node's views are published: it has heard
// who is live, and its lease messages no longer say Hello (tests only).
func (n *Node) HeardLive() bool { return n.reg.heardLive.Load() }
