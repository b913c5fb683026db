package crdt

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ipfs/boxo/datastore/dshelp"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"google.golang.org/protobuf/proto"
)

// Checking blocks. go-ds-crdt merges whatever delta a DAG block holds and
// has no hook to refuse one, so the replica vets blocks on their way in:
// go-ds-crdt gets every block from the DAG service (the heads the
// prefetcher hands it, and the blocks below them), and the replica gives
// it a DAG service that serves a block from another replica only once its
// delta passed the checks (Params.CheckEntry on every element; with
// Params.Immutable, no tombstone and no new value for a key that holds
// one). A refused block is counted once (Params.OnRefuse) and remembered;
// go-ds-crdt sees a block it cannot get:
//
//   - A refused head is not handed to go-ds-crdt at all (the prefetcher
//     checks it).
//   - A refused block below an accepted one ends the walk of that branch:
//     go-ds-crdt logs the failed fetch and marks the store dirty. The
//     blocks above it are merged (each passed the checks) but their head
//     does not become a head of this replica: nothing this replica builds
//     links to the refused block. The repair walk that follows (at most one
//     per RepairInterval, 10 s) reads the local DAG from the heads down;
//     blocks already merged are not checked again (go-ds-crdt records them
//     as processed), so the walk costs what any failed fetch costs.
//
// Blocks this replica writes do not go through the check (they are its
// own, made from what it checked or wrote).

// Refusals of Immutable replicas; CheckEntry's own errors are passed on.
var (
	ErrTombstone = errors.New("crdt: tombstone in an immutable store")
	ErrOverwrite = errors.New("crdt: another value for an entry of an immutable store")
	ErrNotDelta  = errors.New("crdt: block is not a delta")

	errLocal = errors.New("crdt: cannot check a block") // the replica's fault, not the block's: not refused
)

// RefusedError is the error go-ds-crdt gets for a refused block.
type RefusedError struct {
	Cid cid.Cid
	Err error // ErrTombstone, ErrOverwrite, ErrNotDelta or CheckEntry's error
}

func (e *RefusedError) Error() string { return fmt.Sprintf("crdt: block %s refused: %v", e.Cid, e.Err) }
func (e *RefusedError) Unwrap() error { return e.Err }

// rememberBlocks is how many refused, and how many accepted but not yet
// merged, blocks a checker remembers.
const rememberBlocks = 1024

type checker struct {
	entry     func(key string, value []byte) error
	immutable bool
	onRefuse  func(*RefusedError)
	store     ds.Read // go-ds-crdt's processed-block records
	ns        ds.Key

	ready chan struct{} // closed once current is set (go-ds-crdt is up) or the replica fails
	cur   ds.Read       // the replica's current values

	mu   sync.Mutex
	bad  blockSet // refused
	good blockSet // accepted, maybe not merged yet
	errs map[cid.Cid]*RefusedError
}

func newChecker(p Params, store ds.Read) *checker {
	return &checker{entry: p.CheckEntry, immutable: p.Immutable, onRefuse: p.OnRefuse, store: store, ns: p.Namespace,
		ready: make(chan struct{}), bad: newBlockSet(), good: newBlockSet(), errs: map[cid.Cid]*RefusedError{}}
}

// start gives the checker the replica's current values; nil: the replica
// did not start (checks fail from now on).
func (c *checker) start(cur ds.Read) {
	c.cur = cur
	close(c.ready)
}

// processed reports whether go-ds-crdt merged the block (it records each in
// its namespace under "b", see go-ds-crdt v0.6.8's processedBlockKey).
func (c *checker) processed(ctx context.Context, id cid.Cid) bool {
	ok, err := c.store.Has(ctx, c.ns.ChildString("b").ChildString(dshelp.MultihashToDsKey(id.Hash()).String()))
	return err == nil && ok
}

// vet returns nil for a block go-ds-crdt may merge.
func (c *checker) vet(ctx context.Context, nd ipld.Node) error {
	id := nd.Cid()
	c.mu.Lock()
	if e, ok := c.errs[id]; ok {
		c.mu.Unlock()
		return e
	}
	ok := c.good.has(id)
	c.mu.Unlock()
	if ok || c.processed(ctx, id) {
		return nil
	}
	pn, isProto := nd.(*dag.ProtoNode)
	var err error
	if !isProto {
		err = ErrNotDelta
	} else {
		err = c.vetDelta(ctx, pn.Data())
	}
	if err == nil {
		c.mu.Lock()
		c.good.add(id, nil)
		c.mu.Unlock()
		return nil
	}
	if errors.Is(err, errLocal) {
		return err // not the block's fault: not refused
	}
	re := &RefusedError{Cid: id, Err: err}
	c.mu.Lock()
	if e, ok := c.errs[id]; ok { // refused at the same time elsewhere
		c.mu.Unlock()
		return e
	}
	c.errs[id] = re
	c.bad.add(id, func(old cid.Cid) { delete(c.errs, old) })
	c.mu.Unlock()
	if c.onRefuse != nil {
		c.onRefuse(re)
	}
	return re
}

// vetDelta checks a block's data: a pb.Delta.
func (c *checker) vetDelta(ctx context.Context, data []byte) error {
	var d pb.Delta
	if err := proto.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("%w: %v", ErrNotDelta, err)
	}
	for _, e := range append(d.Elements[:len(d.Elements):len(d.Elements)], d.Tombstones...) {
		if k := e.GetKey(); k == "" || ds.NewKey(k).String() != k { // RawKey panics on some
			return fmt.Errorf("%w: key %q is not a clean datastore key", ErrNotDelta, clip(k))
		}
	}
	if c.immutable && len(d.Tombstones) > 0 {
		return fmt.Errorf("%w: %s", ErrTombstone, d.Tombstones[0].GetKey())
	}
	if c.immutable {
		select {
		case <-c.ready:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", errLocal, ctx.Err())
		}
		if c.cur == nil {
			return fmt.Errorf("%w: replica not running", errLocal)
		}
	}
	if c.immutable { // first: it costs a read per entry, CheckEntry may cost more
		seen := make(map[string][]byte, len(d.Elements))
		for _, e := range d.Elements {
			if v, ok := seen[e.GetKey()]; ok && string(v) != string(e.GetValue()) {
				return fmt.Errorf("%w: %s (twice in one delta)", ErrOverwrite, e.GetKey())
			}
			seen[e.GetKey()] = e.GetValue()
			v, err := c.cur.Get(ctx, ds.RawKey(e.GetKey()))
			switch {
			case errors.Is(err, ds.ErrNotFound):
			case err != nil:
				return fmt.Errorf("%w: read %s: %w", errLocal, e.GetKey(), err)
			case string(v) != string(e.GetValue()):
				return fmt.Errorf("%w: %s", ErrOverwrite, e.GetKey())
			}
		}
	}
	if c.entry != nil {
		for _, e := range d.Elements {
			if err := c.entry(e.GetKey(), e.GetValue()); err != nil {
				return err
			}
		}
	}
	return nil
}

// clip shortens what a peer sent for a log line.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// blockSet is a bounded set of block ids: past rememberBlocks the oldest
// goes. Not synchronized (the checker's mutex guards it).
type blockSet struct {
	ids  map[cid.Cid]struct{}
	ring []cid.Cid
	next int
}

func newBlockSet() blockSet {
	return blockSet{ids: map[cid.Cid]struct{}{}, ring: make([]cid.Cid, rememberBlocks)}
}

func (s *blockSet) has(id cid.Cid) bool { _, ok := s.ids[id]; return ok }

func (s *blockSet) add(id cid.Cid, evicted func(cid.Cid)) {
	if s.has(id) {
		return
	}
	if old := s.ring[s.next]; old.Defined() {
		delete(s.ids, old)
		if evicted != nil {
			evicted(old)
		}
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.ids[id] = struct{}{}
}

// checkedDAG is the DAG service go-ds-crdt gets: blocks come out of Get,
// GetMany and sessions only once vetted.
type checkedDAG struct {
	ipld.DAGService
	c *checker
}

func (d *checkedDAG) Get(ctx context.Context, id cid.Cid) (ipld.Node, error) {
	return checkedGet(ctx, d.DAGService, d.c, id)
}

func (d *checkedDAG) GetMany(ctx context.Context, ids []cid.Cid) <-chan *ipld.NodeOption {
	return checkedGetMany(ctx, d.DAGService, d.c, ids)
}

// checkedSessionDAG is a checkedDAG over a DAG service with sessions
// (ipfs-lite's), which go-ds-crdt uses to walk a branch.
type checkedSessionDAG struct {
	checkedDAG
	s dscrdt.SessionDAGService
}

func (d *checkedSessionDAG) Session(ctx context.Context) ipld.NodeGetter {
	return &checkedGetter{ng: d.s.Session(ctx), c: d.c}
}

type checkedGetter struct {
	ng ipld.NodeGetter
	c  *checker
}

func (g *checkedGetter) Get(ctx context.Context, id cid.Cid) (ipld.Node, error) {
	return checkedGet(ctx, g.ng, g.c, id)
}

func (g *checkedGetter) GetMany(ctx context.Context, ids []cid.Cid) <-chan *ipld.NodeOption {
	return checkedGetMany(ctx, g.ng, g.c, ids)
}

func checkedGet(ctx context.Context, ng ipld.NodeGetter, c *checker, id cid.Cid) (ipld.Node, error) {
	nd, err := ng.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := c.vet(ctx, nd); err != nil {
		return nil, err
	}
	return nd, nil
}

// checkedGetMany vets what ng's GetMany returns. Its goroutine ends when
// ng's channel closes (GetMany closes it when done or when ctx ends); the
// channel it returns holds every answer, so it never blocks on a reader
// that stopped reading.
func checkedGetMany(ctx context.Context, ng ipld.NodeGetter, c *checker, ids []cid.Cid) <-chan *ipld.NodeOption {
	in := ng.GetMany(ctx, ids)
	out := make(chan *ipld.NodeOption, len(ids))
	go func() {
		defer close(out)
		for o := range in {
			if o.Err == nil {
				if err := c.vet(ctx, o.Node); err != nil {
					o = &ipld.NodeOption{Err: err}
				}
			}
			select {
			case out <- o:
			default: // more answers than asked for: not go-ds-crdt's getter
			}
		}
	}()
	return out
}

// checked wraps dag for go-ds-crdt.
func checked(d ipld.DAGService, c *checker) ipld.DAGService {
	cd := checkedDAG{DAGService: d, c: c}
	if s, ok := d.(dscrdt.SessionDAGService); ok {
		return &checkedSessionDAG{checkedDAG: cd, s: s}
	}
	return &cd
}
