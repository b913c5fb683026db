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
	"github.com/signalmesh/signalmesh/journal"
)

// Pruning (Params.Prune). Every round the node deletes from its own store
// the journal signals past an age limit of Config.Retention that its core
// has delivered: their entries, the journal blocks all of whose entries
// are such signals (the block's merged mark stays; package crdt, Prune),
// and their index entries. Nothing is sent to other replicas: each prunes
// by the same rule at about the same time (age runs from the signal's own
// time attribute), so disk follows what is retained. A block that holds
// one signal still retained stays whole until that one leaves too.
//
// What a node no longer has it cannot serve: a peer that was away longer
// than the retention asks in vain for blocks every other peer pruned (it
// merges everything newer meanwhile, and its store's repair walk retries;
// what it lacks is past retention), and a fresh peer joins from a
// snapshot (Config.SnapshotJoin) instead of walking the DAG. The ids of
// pruned signals go into a filter (two generations of a million ids), so
// that an effect naming a pruned cause is not held waiting for it
// (causal.Params.Gone).
//
// Count and byte rules are views only (the journal's Stream and Replay
// apply them): what they leave out stays on disk.

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
	drop := func(key string, value []byte) bool {
		k := ds.NewKey(key)
		if k.String() != key {
			return false
		}
		ref, seq, ok := journal.ParseSignalKey(k)
		if !ok || seq > delivered[ref] {
			return false
		}
		s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{})
		return err == nil && ret.Expired(s, now)
	}
	var index []ds.Key
	var refs []causal.Ref
	dropped := func(_ string, value []byte) {
		s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{})
		if err != nil {
			return
		}
		m, err := journal.MetaOf(s)
		if err != nil {
			return
		}
		n.goneSet().add(m.ID)
		refs = append(refs, m.Ref())
		for _, e := range journal.IndexEntries(m) {
			index = append(index, ds.RawKey(n.indexPrefix+e.Key.String()))
		}
	}
	// A start after a crash begins from a checkpoint taken before the
	// deletes (checkpoint.go): the journal will lack what they delete,
	// and it was delivered when the round began.
	st, err := n.repl.Prune(ctx, blocks, drop, func() error { return n.writeCheckpoint(ctx) }, dropped)
	n.m.pruned.Add(int64(st.Keys))
	n.m.prunedBlocks.Add(int64(st.Blocks))
	if len(index) > 0 && n.memIdx == nil {
		// Entries queued for the index before the prune are written
		// first (a flush holds idxWriteMu throughout), so none comes back.
		n.flushIndex()
		n.idxWriteMu.Lock()
		b, berr := n.store.Batch(context.WithoutCancel(ctx))
		for _, k := range index {
			if berr == nil {
				berr = b.Delete(ctx, k)
			}
		}
		if berr == nil {
			berr = b.Commit(context.WithoutCancel(ctx))
		}
		n.idxWriteMu.Unlock()
		err = errors.Join(err, berr)
	}
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
	if st.Keys > 0 {
		err = errors.Join(err, n.saveGone(context.WithoutCancel(ctx)))
	}
	return err
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
