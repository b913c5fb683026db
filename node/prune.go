package node

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/journal"
)

// Pruning (Params.Prune). Every round the node deletes from its own store
// the journal signals past an age limit of Config.Retention that its core
// has delivered, and the journal blocks all of whose entries are such
// signals, from the oldest up: a block goes only with every block below
// it (the block's merged mark stays; package crdt, Prune). Before it
// deletes anything it adds the ids to a filter of ids gone (two
// generations of a million ids, saved), deletes their index entries, and
// writes a checkpoint (checkpoint.go), so that a crash at any point leaves
// a node that does not wait for what it pruned. Nothing is sent to other
// replicas: each prunes by the same rule at about the same time (age runs
// from the signal's own time attribute), so disk follows what is retained.
//
// What a node no longer has it cannot serve. A peer that was away while
// blocks were pruned stops its walk at the first block nobody holds; below
// it every block was pruned too, so what it misses is past retention (it
// then waits DepWait for those sequences, once). A fresh peer joins from
// a snapshot (Config.SnapshotJoin) instead of walking the DAG. An effect
// naming a pruned cause is not held waiting for it (causal.Params.Gone).
//
// What bounds the disk less well: a block holding one signal still kept
// (a longer rule's) keeps every block above it until it goes; their
// signals past retention lose their values, not their blocks. Count and
// byte rules are views only (Stream and Replay apply them): what they
// leave out stays on disk.

// pruneEvery is how often rounds run: Params.Prune, or a quarter of the
// shortest age limit (1 s to 10 minutes); 0: never.
func (n *Node) pruneEvery() time.Duration {
	if n.cfg.Params.Prune < 0 {
		return 0
	}
	if n.cfg.Params.Prune > 0 {
		return n.cfg.Params.Prune
	}
	var least time.Duration
	for _, r := range n.cfg.Retention {
		if r.MaxAge > 0 && (least == 0 || r.MaxAge < least) {
			least = r.MaxAge
		}
	}
	if least == 0 {
		return 0
	}
	return min(max(least/4, time.Second), 10*time.Minute)
}

// pruner runs the rounds until the node closes.
func (n *Node) pruner(every time.Duration) {
	defer n.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			if err := n.pruneOnce(n.ctx); err != nil && n.ctx.Err() == nil {
				n.log.Warn("node: prune the journal", "err", err)
			}
		}
	}
}

// pruneOnce runs one round.
func (n *Node) pruneOnce(ctx context.Context) error {
	var delivered map[string]uint64
	if err := n.do(ctx, func() { delivered = n.core.Delivered() }); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	blocks, err := n.dag.BlockStore().AllKeysChan(ctx)
	if err != nil {
		return err
	}
	now, ret := time.Now(), n.cfg.Retention
	left := n.departures(delivered) // origins that left (origins.go)
	drop := func(key string, value []byte) bool {
		k := ds.NewKey(key)
		if k.String() != key {
			return false
		}
		ref, seq, ok := journal.ParseSignalKey(k)
		if !ok {
			return false
		}
		if seq > left.upTo(ref) {
			left.keep(ref)
			return false
		}
		s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{})
		if err != nil || !ret.Expired(s, now) {
			left.keep(ref)
			return false
		}
		return true
	}
	// Before anything is deleted: the ids go into the filter of ids gone
	// (saved), their index entries are deleted, and a checkpoint is
	// written (checkpoint.go): a crash during the deletes then finds
	// those ids gone, no index entry of a pruned signal, and a state that
	// does not wait for what was pruned (it was delivered when the round
	// began).
	var refs []causal.Ref
	before := func(ps []crdt.Pruned) error {
		var index []ds.Key
		g := n.goneSet()
		for _, p := range ps {
			s, err := signalmesh.DecodeBinary(p.Value, signalmesh.Limits{})
			if err != nil {
				continue
			}
			m, err := journal.MetaOf(s)
			if err != nil {
				continue
			}
			g.add(m.ID)
			refs = append(refs, m.Ref())
			if n.memIdx != nil {
				n.memIdx.Remove(m)
				continue
			}
			for _, e := range journal.IndexEntries(m) {
				index = append(index, ds.RawKey(n.indexPrefix+e.Key.String()))
			}
		}
		if err := n.saveGone(ctx); err != nil {
			return err
		}
		if err := n.departedFloors(ctx, left, ps); err != nil { // origins.go
			return err
		}
		if len(index) > 0 {
			// Entries queued for the index are written first, so that none
			// of these comes back (but from a flush under way on another
			// goroutine right now: a stale entry, which Get and Effects
			// skip, and the core counts as delivered).
			n.flushIndex()
			if err := n.deleteKeys(ctx, index); err != nil {
				return err
			}
		}
		return n.writeCheckpoint(ctx)
	}
	st, err := n.repl.Prune(ctx, blocks, drop, before)
	n.m.pruned.Add(int64(st.Keys))
	n.m.prunedBlocks.Add(int64(st.Blocks))
	if len(refs) > 0 {
		// A pruned signal still in the fresh set (delivered, its journal
		// entry not seen by the loop) is journaled: it needs no adoption,
		// and its entry will not be found again.
		err = errors.Join(err, n.do(ctx, func() {
			for _, r := range refs {
				n.forgetFresh(r)
			}
		}))
	}
	if err == nil {
		err = n.forgetDeparted(ctx, left) // after a walk of the whole journal
	}
	return err
}

// deleteKeys deletes keys from the store, in batches of 1,024.
func (n *Node) deleteKeys(ctx context.Context, keys []ds.Key) error {
	for len(keys) > 0 {
		k := keys[:min(len(keys), 1024)]
		keys = keys[len(k):]
		b, err := n.store.Batch(ctx)
		if err != nil {
			return err
		}
		for _, x := range k {
			if err := b.Delete(ctx, x); err != nil {
				return err
			}
		}
		if err := b.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// goneRotate is how many ids one generation of the filter of ids gone
// takes (2 MiB: about 0.1 % false positives at a million).
const goneRotate = 1 << 20

// gone is the filter of the ids whose signals left this node's journal
// (pruned, or past retention at the snapshot it joined from): two
// generations, the older forgotten when the newer is full. An effect
// naming an id forgotten so waits Params.CauseWait for it, then is
// delivered without it.
type gone struct {
	mu       sync.Mutex
	cur, old *bloom
	n        int
}

func (g *gone) mayHave(id string) bool {
	g.mu.Lock()
	cur, old := g.cur, g.old
	g.mu.Unlock()
	return cur.mayHave(id) || old != nil && old.mayHave(id)
}

func (g *gone) add(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n >= goneRotate {
		g.old, g.cur, g.n = g.cur, newBloom(len(g.cur.words)*64), 0
	}
	g.cur.add(id)
	g.n++
}

func (g *gone) words() []uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.cur.snapshot()
	if g.old != nil {
		w = append(w, g.old.snapshot()...)
	}
	return w
}

// goneSet is the node's filter, made when first needed (before the core
// is, or from its loop and the pruner: under goneMu).
func (n *Node) goneSet() *gone {
	n.goneMu.Lock()
	defer n.goneMu.Unlock()
	if n.gone == nil {
		n.gone = &gone{cur: newBloom(goneBits)}
	}
	return n.gone
}

const goneBits = 1 << 24

func (n *Node) goneKey() ds.Key { return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/gone") }

// saveGone writes the filter (one or two generations of goneBits).
func (n *Node) saveGone(ctx context.Context) error {
	w := n.goneSet().words()
	b := make([]byte, 0, 8*len(w))
	for _, x := range w {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return n.putChunked(ctx, n.goneKey(), b)
}

// readGone loads the filter a node that pruned, or joined from a
// snapshot, kept in its store.
func (n *Node) readGone(ctx context.Context) error {
	b, err := n.getChunked(ctx, n.goneKey())
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if errors.Is(err, errStateEncoding) {
		n.m.reject("gone_filter")
		return nil
	}
	if err != nil {
		return err
	}
	per := goneBits / 8
	if len(b) != per && len(b) != 2*per {
		n.m.reject("gone_filter")
		return nil
	}
	load := func(b []byte) *bloom {
		words := make([]uint64, len(b)/8)
		for i := range words {
			words[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		f := newBloom(goneBits)
		f.load(words)
		return f
	}
	g := n.goneSet()
	g.mu.Lock()
	g.cur, g.n = load(b[:per]), goneRotate/2 // not known: counted half full
	if len(b) == 2*per {
		g.old = load(b[per:])
	}
	g.mu.Unlock()
	return nil
}
