package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

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

// chunkBatch is how many chunks one batch writes (512 KiB). A batch of
// half pebble's memtable (2 MiB by default) or more is appended whole to
// the write-ahead log the memtable has nearly filled: that log grows past
// the memtable's size, and pebble keeps its logs for reuse at the largest
// size they reached (a 4 MiB checkpoint in one batch grew the store's four
// logs from 14.7 to 24.7 MiB over 10 minutes of pruning, more than the
// pruning saved).
const chunkBatch = 16

// putChunked writes b under key in chunks, the key itself holding the
// length, the count and the slot (key/a or key/b) holding the chunks. A
// record is written to the slot its last one is not in, in batches of
// chunkBatch, then one batch puts the header, which moves the record to
// the new slot, and deletes the old slot's chunks; then the store is
// synced. A crash or an error before that batch leaves the last record
// whole (the store keeps writes in order: the header's batch lands only
// after the chunks'). A record of the first layout (no slot: chunks right
// under key) is read, and its chunks deleted by the next write.
func (n *Node) putChunked(ctx context.Context, key ds.Key, b []byte) error {
	n.chunkMu.Lock()
	defer n.chunkMu.Unlock()
	var old chunkHead
	if h, err := n.store.Get(ctx, key); err == nil {
		old, _ = parseChunkHead(h) // unreadable: nothing to keep, and the slots are cleared below
	} else if !errors.Is(err, ds.ErrNotFound) {
		return err
	}
	head := chunkHead{total: uint64(len(b)), count: uint64((len(b) + chunkSize - 1) / chunkSize), slot: 1}
	if old.slot == 1 {
		head.slot = 2
	}
	// Chunks of the new slot left by a write that did not finish.
	stale, err := n.slotKeys(ctx, key, head.slot)
	if err != nil {
		return err
	}
	for i := 0; i < int(head.count); i += chunkBatch {
		batch, err := n.store.Batch(ctx)
		if err != nil {
			return err
		}
		for j := i; j < min(i+chunkBatch, int(head.count)); j++ {
			if err := batch.Put(ctx, chunkKey(key, head.slot, j), b[j*chunkSize:min(len(b), (j+1)*chunkSize)]); err != nil {
				return err
			}
			delete(stale, chunkKey(key, head.slot, j))
		}
		if err := batch.Commit(ctx); err != nil {
			return err
		}
	}
	batch, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	if err := batch.Put(ctx, key, head.encode()); err != nil {
		return err
	}
	var gone []ds.Key
	for k := range stale {
		gone = append(gone, k)
	}
	for i := 0; i < int(old.count); i++ {
		gone = append(gone, chunkKey(key, old.slot, i))
	}
	for _, k := range gone {
		if err := batch.Delete(ctx, k); err != nil {
			return err
		}
	}
	if err := batch.Commit(ctx); err != nil {
		return err
	}
	return n.store.Sync(ctx, key)
}

// slotKeys lists the keys under a slot of key.
func (n *Node) slotKeys(ctx context.Context, key ds.Key, slot uint64) (map[ds.Key]bool, error) {
	rs, err := n.store.Query(ctx, query.Query{Prefix: chunkKey(key, slot, 0).Parent().String(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[ds.Key]bool{}
	for r := range rs.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		out[ds.RawKey(r.Key)] = true
	}
	return out, nil
}

// getChunked reads what putChunked wrote (ds.ErrNotFound: nothing).
func (n *Node) getChunked(ctx context.Context, key ds.Key) ([]byte, error) {
	h, err := n.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	head, ok := parseChunkHead(h)
	if !ok || head.total > maxChunked || head.count != (head.total+chunkSize-1)/chunkSize {
		return nil, fmt.Errorf("%w: chunk header of %s", errStateEncoding, key)
	}
	b := make([]byte, 0, head.total)
	for i := 0; i < int(head.count); i++ {
		c, err := n.store.Get(ctx, chunkKey(key, head.slot, i))
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d of %s: %w", errStateEncoding, i, key, err)
		}
		b = append(b, c...)
	}
	if uint64(len(b)) != head.total {
		return nil, fmt.Errorf("%w: %s holds %d bytes, its header says %d", errStateEncoding, key, len(b), head.total)
	}
	return b, nil
}

const maxChunked = 1 << 30

// chunkKey is the key of chunk i in a slot of key: 0, the first layout
// (key/<i>), 1 and 2 (key/a/<i>, key/b/<i>).
func chunkKey(key ds.Key, slot uint64, i int) ds.Key {
	c := fmt.Sprintf("%08x", i)
	switch slot {
	case 0:
		return key.ChildString(c)
	case 1:
		return key.ChildString("a").ChildString(c)
	default:
		return key.ChildString("b").ChildString(c)
	}
}

// chunkHead is a chunked record's header: varints total and count, then
// the slot (none in the first layout: slot 0).
type chunkHead struct{ total, count, slot uint64 }

func (h chunkHead) encode() []byte {
	return binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint(nil, h.total), h.count), h.slot)
}

func parseChunkHead(b []byte) (chunkHead, bool) {
	var h chunkHead
	var k int
	for i, x := range []*uint64{&h.total, &h.count, &h.slot} {
		if len(b) == 0 && i == 2 {
			return h, true // the first layout
		}
		if *x, k = binary.Uvarint(b); k <= 0 {
			return chunkHead{}, false
		}
		b = b[k:]
	}
	return h, len(b) == 0 && (h.slot == 1 || h.slot == 2)
}
