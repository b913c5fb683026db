package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/internal/varint"
	"github.com/signalmesh/signalmesh/journal"
)

// A checkpoint is the reopen state (state.go) taken while the node runs,
// for a start after a crash: a node that prunes (prune.go) or joined from
// a snapshot no longer holds its origins' early signals, so replaying its
// journal from each origin's first sequence would stop at the first one
// missing and hold everything behind it for DepWait. The pruner writes
// one after each round that pruned, and a snapshot join one of the state
// it starts from. A start without a clean Close's record restores the
// core from the checkpoint and replays only what lies above it.
//
// What makes it safe to start from: before the state is taken, every
// queued index entry is written and the store synced, so the index holds
// every journaled signal the state counts as delivered, but those
// delivered before their journal entry arrived (the fresh set); their
// places are in the checkpoint, and the start indexes the ones it finds
// in the journal. Everything journaled since is above the state's marks
// and is read, and indexed, by the start's replay (after a crash the
// start indexes what it reads). What was pruned was delivered when the
// round began, so it lies below the marks of the checkpoint written after
// it.

func (n *Node) checkpointKey() ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/checkpoint")
}

// writeCheckpoint takes and writes a checkpoint (not on the loop).
func (n *Node) writeCheckpoint(ctx context.Context) error {
	n.flushIndex()
	if err := n.store.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	var st reopenState
	if err := n.do(ctx, func() {
		st = reopenState{core: n.core.State(), tops: n.tops.all(), seen: n.seen.snapshot()}
		for r := range n.fresh.sigs {
			st.fresh = append(st.fresh, r)
		}
	}); err != nil {
		return err
	}
	return n.putCheckpoint(ctx, st)
}

func (n *Node) putCheckpoint(ctx context.Context, st reopenState) error {
	b, err := encodeCheckpoint(st)
	if err != nil {
		return err
	}
	return n.putChunked(ctx, n.checkpointKey(), b)
}

func encodeCheckpoint(st reopenState) ([]byte, error) {
	s, err := encodeState(st)
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(nil, uint64(len(s)))
	b = append(b, s...)
	b = binary.AppendUvarint(b, uint64(len(st.fresh)))
	for _, r := range st.fresh {
		b = binary.AppendUvarint(b, uint64(len(r.Origin)))
		b = append(b, r.Origin...)
		b = binary.AppendUvarint(b, r.Seq)
	}
	return b, nil
}

const maxCheckpointFresh = 1 << 20

func decodeCheckpoint(b []byte) (reopenState, error) {
	d := varint.Reader{B: b, Base: errStateEncoding}
	s := d.Bytes(uint64(len(b)))
	if d.Err != nil {
		return reopenState{}, d.Err
	}
	st, err := decodeState(s)
	if err != nil {
		return st, err
	}
	nf := d.Count(maxCheckpointFresh, 2)
	for i := uint64(0); i < nf && d.Err == nil; i++ {
		o := string(d.Bytes(maxRefLen))
		st.fresh = append(st.fresh, causal.Ref{Origin: o, Seq: d.Num()})
	}
	if d.Err == nil && len(d.B) != 0 {
		d.Fail("trailing bytes")
	}
	st.checkpoint = true
	return st, d.Err
}

// readCheckpoint reads the checkpoint (nil: none, or one that does not
// decode: counted, and the start replays the journal).
func (n *Node) readCheckpoint(ctx context.Context) (*reopenState, error) {
	b, err := n.getChunked(ctx, n.checkpointKey())
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if errors.Is(err, errStateEncoding) {
		n.m.reject("checkpoint")
		n.log.Warn("node: the checkpoint does not read; replaying the journal", "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st, err := decodeCheckpoint(b)
	if err != nil {
		n.m.reject("checkpoint")
		n.log.Warn("node: the checkpoint does not decode; replaying the journal", "err", err)
		return nil, nil
	}
	return &st, nil
}

// indexFresh indexes the signals a checkpoint counted as delivered before
// their journal entry arrived, those that are in the journal now.
func (n *Node) indexFresh(ctx context.Context, refs []causal.Ref) error {
	for _, r := range refs {
		raw, err := n.repl.Get(ctx, journal.SignalKey(r.Origin, r.Seq))
		if errors.Is(err, ds.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("node: read journal entry %s: %w", r, err)
		}
		s, err := signalmesh.DecodeBinary(raw, signalmesh.Limits{})
		if err != nil {
			continue
		}
		m, err := journal.MetaOf(s)
		if err != nil || m.Ref() != r {
			continue
		}
		n.seen.add(s.ID)
		n.indexLater(m)
	}
	n.flushIndex()
	return nil
}

// Records of megabytes (a checkpoint, the filter of ids gone) are stored
// in chunks of chunkSize: a point lookup that lands near one in the store
// (go-ds-crdt asks for absent keys on every merge) reads and decompresses
// the whole data block holding it, and a single 4 MiB value made writing
// a 100,000-signal journal six times slower.
const chunkSize = 32 << 10

// putChunked writes b under key in chunks (key/<index>), the key itself
// holding the length and the count, and deletes the chunks of an older,
// longer record; one batch, then synced.
func (n *Node) putChunked(ctx context.Context, key ds.Key, b []byte) error {
	old := 0
	if h, err := n.store.Get(ctx, key); err == nil {
		_, c, ok := chunkHeader(h)
		if ok {
			old = int(c)
		}
	} else if !errors.Is(err, ds.ErrNotFound) {
		return err
	}
	batch, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	count := (len(b) + chunkSize - 1) / chunkSize
	for i := 0; i < count; i++ {
		if err := batch.Put(ctx, chunkKey(key, i), b[i*chunkSize:min(len(b), (i+1)*chunkSize)]); err != nil {
			return err
		}
	}
	for i := count; i < old; i++ {
		if err := batch.Delete(ctx, chunkKey(key, i)); err != nil {
			return err
		}
	}
	h := binary.AppendUvarint(binary.AppendUvarint(nil, uint64(len(b))), uint64(count))
	if err := batch.Put(ctx, key, h); err != nil {
		return err
	}
	if err := batch.Commit(ctx); err != nil {
		return err
	}
	return n.store.Sync(ctx, key)
}

// getChunked reads what putChunked wrote (ds.ErrNotFound: nothing).
func (n *Node) getChunked(ctx context.Context, key ds.Key) ([]byte, error) {
	h, err := n.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	total, count, ok := chunkHeader(h)
	if !ok || total > maxChunked || count != (total+chunkSize-1)/chunkSize {
		return nil, fmt.Errorf("%w: chunk header of %s", errStateEncoding, key)
	}
	b := make([]byte, 0, total)
	for i := 0; i < int(count); i++ {
		c, err := n.store.Get(ctx, chunkKey(key, i))
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d of %s: %w", errStateEncoding, i, key, err)
		}
		b = append(b, c...)
	}
	if uint64(len(b)) != total {
		return nil, fmt.Errorf("%w: %s holds %d bytes, its header says %d", errStateEncoding, key, len(b), total)
	}
	return b, nil
}

const maxChunked = 1 << 30

func chunkKey(key ds.Key, i int) ds.Key { return key.ChildString(fmt.Sprintf("%08x", i)) }

func chunkHeader(h []byte) (total, count uint64, ok bool) {
	total, k := binary.Uvarint(h)
	if k <= 0 {
		return 0, 0, false
	}
	count, j := binary.Uvarint(h[k:])
	return total, count, j > 0 && k+j == len(h)
}
