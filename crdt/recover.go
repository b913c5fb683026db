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
// the record (unless go-ds-crdt was walking an announcement: it drops a
// walk's queued blocks at Close without a dirty mark). When a replica opens
// and finds the record (the last process did not close) or go-ds-crdt's
// dirty mark, it reads every merged block's links, in the background: a
// link to a block not merged is a hole, and it hands each hole to
// go-ds-crdt as an announced head (through the prefetcher, which fetches
// it from whoever has it), looking again (1 s, doubling up to
// recoverRetry) until every hole is merged or refused. Then the tops of
// the cut branches (merged blocks that no merged block links and that are
// not heads) are merged again, so that they become heads. The open record
// stays until then, so a restart in the meantime scans again. The scan
// reads every merged block once: its cost follows the DAG's size (one
// block per journal batch), and it is logged.
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

// holes returns the links of merged blocks that are not merged, and the
// merged blocks that no merged block links and that are not heads: the tops
// of cut walks (go-ds-crdt makes a branch's top a head only when its walk
// reaches a merged block).
func (r *Replica) holes(ctx context.Context) (holes, tops []cid.Cid, err error) {
	res, err := r.store.Query(ctx, query.Query{Prefix: r.mergedPrefix(), KeysOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	seen := cid.NewSet()
	var merged []cid.Cid
	for e := range res.Next() {
		if e.Error != nil {
			return nil, nil, e.Error
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
		merged = append(merged, c)
		for _, l := range nd.Links() {
			if seen.Visit(l.Cid) && !r.merged(ctx, l.Cid) {
				holes = append(holes, l.Cid)
			}
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	heads := cid.NewSet()
	for _, h := range r.InternalStats(ctx).Heads {
		heads.Add(h)
	}
	for _, c := range merged {
		if !seen.Has(c) && !heads.Has(c) {
			tops = append(tops, c)
		}
	}
	return holes, tops, nil
}

// reHead makes the tops of cut walks heads: their merged mark is removed
// and go-ds-crdt merges them again (the same delta: nothing changes) and,
// their links being merged, makes each a head, which later commits link
// and announcements name.
func (r *Replica) reHead(ctx context.Context, tops []cid.Cid) {
	for _, c := range tops {
		if err := r.store.Delete(ctx, r.ns.ChildString("b").ChildString(dshelp.MultihashToDsKey(c.Hash()).String())); err != nil {
			continue
		}
		if !r.pf.wantHole(ctx, c) {
			return
		}
	}
}

// recover hands the holes to go-ds-crdt until each is merged or refused.
// It needs the prefetcher (Params.Has).
func (r *Replica) recover(ctx context.Context) {
	defer r.wg.Done()
	for !r.fillHoles(ctx, 0) {
		if ctx.Err() != nil {
			return
		}
	}
	r.scanDone.Store(true)
}

// fillHoles looks for holes (links of merged blocks that are not merged)
// and the tops of cut walks, and hands the holes to go-ds-crdt until each
// is merged or refused, retrying (1 s, doubling up to recoverRetry) up to
// tries times (0: until done); then it makes the tops heads. It reports
// whether it got there.
func (r *Replica) fillHoles(ctx context.Context, tries int) bool {
	start := time.Now()
	holes, tops, err := r.holes(ctx)
	r.log.Info("crdt: looked for blocks a walk left unmerged", "took", time.Since(start), "holes", len(holes), "tops", len(tops))
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("crdt: could not look for blocks a cut-short walk left unmerged", "err", err)
		}
		return false
	}
	if len(holes)+len(tops) > 0 {
		r.log.Warn("crdt: merging blocks a walk left unmerged", "blocks", len(holes), "tops", len(tops))
	}
	t := time.NewTimer(0)
	defer t.Stop()
	wait := time.Second
	for try := 0; ; try++ {
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
			r.reHead(ctx, tops)
			return true
		}
		if tries > 0 && try >= tries {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		for _, c := range holes {
			if !r.pf.wantHole(ctx, c) {
				return false
			}
		}
		t.Reset(wait)
		wait = min(2*wait, recoverRetry)
	}
}

// repairLoop stands in for go-ds-crdt's repair walk (turned off where this
// runs: with Params.Has), which fetches every block from the heads down,
// merged or not, and gives up at the first one it cannot get: on a replica
// that pruned blocks (Prune) it could never finish, and it walked the
// whole DAG every interval meanwhile. Every interval, once the open scan
// is done, a store go-ds-crdt marked dirty (a fetch failed) has its mark
// taken off and its holes filled as at open (fillHoles); one that does
// not get there within a few tries is marked again, for the next round.
func (r *Replica) repairLoop(ctx context.Context, every time.Duration) {
	defer r.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.scan && !r.scanDone.Load() {
			continue
		}
		dirty, err := r.store.Has(ctx, r.dirtyKey())
		if err != nil || !dirty {
			continue
		}
		if err := r.store.Delete(ctx, r.dirtyKey()); err != nil {
			continue
		}
		if !r.fillHoles(ctx, 5) && ctx.Err() == nil {
			_ = r.store.Put(ctx, r.dirtyKey(), nil)
		}
	}
}

// Unmerged is the number of blocks an unclean stop left unmerged that the
// replica has not merged yet (see recover).
func (r *Replica) Unmerged() int { return int(r.unmerged.Load()) }
