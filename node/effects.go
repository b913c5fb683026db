package node

import (
	"context"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// indexVersion names what the index store holds: "2", the id index and
// the effects index (journal.IndexEntries). A store without the mark was
// written before the effects index (or is new).
const indexVersion = "2"

func (n *Node) indexVersionKey() ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/index-version")
}

// checkIndexVersion gives a store whose index predates the effects index
// its effects entries, once, and marks it: by one pass over the journal,
// unless the start's pulls write every entry of what they read anyway
// (n.indexing, after a crash; checkIndex decides it first). A new store
// is marked at once (its pass reads nothing). The mark is written after
// the entries: a crash during the pass leaves none, and the next start
// passes again.
func (n *Node) checkIndexVersion(ctx context.Context) error {
	v, err := n.store.Get(ctx, n.indexVersionKey())
	if err == nil && string(v) == indexVersion {
		return nil
	}
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		return fmt.Errorf("node: read store: %w", err)
	}
	if !n.indexing {
		if err := n.indexEffects(ctx); err != nil {
			return fmt.Errorf("node: index the journal's effects: %w", err)
		}
	}
	if err := n.store.Put(ctx, n.indexVersionKey(), []byte(indexVersion)); err != nil {
		return err
	}
	return n.store.Sync(ctx, n.indexVersionKey())
}

// indexEffects writes the effects index entry of every journaled signal
// that names a cause, in batches, and syncs the index: one pass over the
// journal. An entry that does not decode, or is not at its signal's place,
// gets none (no read finds it either).
func (n *Node) indexEffects(ctx context.Context) error {
	res, err := n.repl.Query(ctx, query.Query{Prefix: "/s"})
	if err != nil {
		return err
	}
	defer res.Close()
	b, err := n.index.Batch(ctx)
	if err != nil {
		return err
	}
	queued, written := 0, 0
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		ref, seq, ok := journal.ParseSignalKey(ds.RawKey(r.Key))
		if !ok {
			continue
		}
		s, err := signalmesh.DecodeBinary(r.Value, signalmesh.Limits{})
		if err != nil {
			continue
		}
		m, err := journal.MetaOf(s)
		if err != nil || m.Origin != ref || m.Seq != seq || m.Cause == "" {
			continue
		}
		e := journal.EffectEntry(m)
		if err := b.Put(ctx, e.Key, e.Value); err != nil {
			return err
		}
		if queued++; queued == 1024 {
			if err := b.Commit(ctx); err != nil {
				return err
			}
			if b, err = n.index.Batch(ctx); err != nil {
				return err
			}
			written += queued
			queued = 0
		}
	}
	if err := b.Commit(ctx); err != nil {
		return err
	}
	written += queued
	n.log.Info("node: indexed the journal's effects", "entries", written)
	return n.index.Sync(ctx, ds.NewKey("/e"))
}

// freshCaused returns, by cause, the signals this node delivered that
// reads see beside the journal (not journaled yet, or lately) and whose
// causeid is one of causes: one call on the loop.
func (n *Node) freshCaused(ctx context.Context, causes ...string) (map[string][]*signalmesh.Signal, error) {
	set := make(map[string]bool, len(causes))
	for _, c := range causes {
		set[c] = true
	}
	var by map[string][]*signalmesh.Signal
	err := n.do(ctx, func() { by = n.fresh.caused(set) })
	return by, err
}

// effectsOf returns, for each id, the signals whose causeid is id: the
// journal's, read through its effects index, and those this node
// delivered at a place the journal does not hold (freshCaused, read
// first: a signal that leaves the fresh set meanwhile is journaled), in
// replay order, each identity once.
func (n *Node) effectsOf(ctx context.Context, ids []string) (map[string][]*signalmesh.Signal, error) {
	fresh, err := n.freshCaused(ctx, ids...)
	if err != nil {
		return nil, err
	}
	by := make(map[string][]*signalmesh.Signal, len(ids))
	for _, id := range ids {
		sigs, err := n.jr.Caused(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(fresh[id]) > 0 {
			places := make(map[causal.Ref]bool, len(sigs))
			for _, s := range sigs {
				r, q := journal.Place(s)
				places[causal.Ref{Origin: r, Seq: q}] = true
			}
			for _, s := range fresh[id] {
				if r, q := journal.Place(s); !places[causal.Ref{Origin: r, Seq: q}] {
					sigs = append(sigs, s)
				}
			}
		}
		journal.Order(sigs)
		by[id] = journal.Unique(sigs)
	}
	return by, nil
}
