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
	if err := n.store.Put(ctx, n.checkpointKey(), b); err != nil {
		return err
	}
	return n.store.Sync(ctx, n.checkpointKey())
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
	b, err := n.store.Get(ctx, n.checkpointKey())
	if errors.Is(err, ds.ErrNotFound) {
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
