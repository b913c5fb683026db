package crdt

import (
	"context"
	"time"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// Recovery after an unclean stop.
//
// go-ds-crdt v0.6.8 walks a branch from its top down and records each block
// as merged as soon as it has merged it. A process killed in the middle of
// a walk leaves the top of the branch merged and the rest not, and nothing
// says so: go-ds-crdt's dirty mark is set only when a fetch fails. Every
// later announcement of the branch stops at its merged top, and go-ds-crdt's
// repair walk starts from the heads, which need not reach it (a branch
// becomes a head only once its walk reaches a merged block). The replica
// would stay short of the rest of the branch for good.
//
// So a replica records in its namespace that it is open, and Close removes
// the record. When a replica opens and finds the record (the last process
// did not close) or go-ds-crdt's dirty mark (a walk was cut short), it reads
// every merged block's links: a link to a block not merged is a hole, and
// it hands each hole to go-ds-crdt as an announced head (through the
// prefetcher, which fetches it from whoever has it). It looks again every
// look (1 s, doubling up to recoverRetry) until every hole is merged or
// refused; the open record stays until then, so a restart in the meantime
// scans again.
const recoverRetry = 10 * time.Second

func (r *Replica) openKey() ds.Key      { return r.ns.ChildString("open") }
func (r *Replica) dirtyKey() ds.Key     { return r.ns.ChildString("d") } // go-ds-crdt v0.6.8's dirtyBitKey
func (r *Replica) mergedPrefix() string { return r.ns.ChildString("b").String() }

// markOpen records that the replica is open and reports whether it must
// look for holes: the last process did not close, or left a walk cut short.
func (r *Replica) markOpen(ctx context.Context) (scan bool, err error) {
	crashed, err := r.store.Has(ctx, r.openKey())
	if err != nil {
		return false, err
	}
	dirty, err := r.store.Has(ctx, r.dirtyKey())
	if err != nil {
		return false, err
	}
	if !crashed {
		if err := r.store.Put(ctx, r.openKey(), nil); err != nil {
			return false, err
		}
		if err := r.store.Sync(ctx, r.openKey()); err != nil {
			return false, err
		}
	}
	return crashed || dirty, nil
}

// merged reports whether go-ds-crdt merged the block.
func (r *Replica) merged(ctx context.Context, c cid.Cid) bool {
	ok, err := r.store.Has(ctx, r.ns.ChildString("b").ChildString(dshelp.MultihashToDsKey(c.Hash()).String()))
	return err == nil && ok
}

// holes returns the links of merged blocks that are not merged.
func (r *Replica) holes(ctx context.Context) ([]cid.Cid, error) {
	res, err := r.store.Query(ctx, query.Query{Prefix: r.mergedPrefix(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	seen := cid.NewSet()
	var holes []cid.Cid
	for e := range res.Next() {
		if e.Error != nil {
			return nil, e.Error
		}
		mh, err := dshelp.DsKeyToMultihash(ds.NewKey(ds.NewKey(e.Key).BaseNamespace()))
		if err != nil {
			continue // not a block record
		}
		c := cid.NewCidV1(cid.DagProtobuf, mh)
		if ok, err := r.has(ctx, c); err != nil || !ok {
			continue // its links cannot be read here; nothing to do about it
		}
		nd, err := r.dag.Get(ctx, c)
		if err != nil {
			continue
		}
		for _, l := range nd.Links() {
			if seen.Visit(l.Cid) && !r.merged(ctx, l.Cid) {
				holes = append(holes, l.Cid)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return holes, nil
}

// recover hands the holes to go-ds-crdt until each is merged or refused.
// It needs the prefetcher (Params.Has).
func (r *Replica) recover(ctx context.Context) {
	defer r.wg.Done()
	holes, err := r.holes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("crdt: could not look for blocks a cut-short walk left unmerged", "err", err)
		}
		return
	}
	if len(holes) > 0 {
		r.log.Warn("crdt: merging blocks an unclean stop left unmerged", "blocks", len(holes))
	}
	t := time.NewTimer(0)
	defer t.Stop()
	wait := time.Second
	for {
		left := holes[:0]
		for _, c := range holes {
			if r.merged(ctx, c) || r.pf.refusedHole(ctx, c) {
				continue
			}
			left = append(left, c)
		}
		holes = left
		r.unmerged.Store(int64(len(holes)))
		if len(holes) == 0 {
			r.scanDone.Store(true)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range holes {
			if !r.pf.wantHole(ctx, c) {
				return
			}
		}
		t.Reset(wait)
		wait = min(2*wait, recoverRetry)
	}
}

// Unmerged is the number of blocks an unclean stop left unmerged that the
// replica has not merged yet (see recover).
func (r *Replica) Unmerged() int { return int(r.unmerged.Load()) }
