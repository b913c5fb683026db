package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/internal/varint"
)

// Reopening without reading the journal. A clean Close writes one record,
// the reopen state: the causal core's State (what was delivered, per
// origin), the highest journaled sequence of each origin (tops), and the
// filter of ids that reached the journal (seen). The next start reads it
// and deletes it (a crash after that start leaves none), restores the core
// from it, and reads from the journal only what lies above what was
// delivered: nothing, after a clean stop, but what was journaled and not
// yet delivered. Without a record (the first start, or after a crash:
// Close did not run) the start lists the journal and replays it, as
// before. The record's size follows the number of origins and the
// filters' fixed sizes (2 MiB each at most), not the journal's length.

func (n *Node) stateKey() ds.Key { return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/reopen-state") }

// reopenState is what the record holds.
type reopenState struct {
	core causal.State
	tops map[string]uint64 // origin ref -> highest journaled sequence
	seen []uint64          // the words of the node's seen filter

	// A checkpoint's (checkpoint.go), taken while the node ran: the
	// places of the signals delivered before their journal entry arrived.
	checkpoint bool
	fresh      []causal.Ref
}

// tops tracks the highest journaled sequence of each origin: the put hook
// notes every journal entry that gets a value (local or remote), so at
// Close, once the journal is closed, it covers the whole journal. Safe for
// concurrent use; one entry per origin.
type tops struct {
	mu      sync.Mutex
	m       map[string]uint64
	dropped int // entries forgotten since m was last copied
}

func (t *tops) note(ref string, seq uint64) {
	t.mu.Lock()
	if seq > t.m[ref] {
		t.m[ref] = seq
	}
	t.mu.Unlock()
}

func (t *tops) get(ref string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[ref]
}

// forget drops ref (an origin that left, origins.go); the map is copied
// when it has lost as many entries as it holds (a Go map keeps its room).
func (t *tops) forget(ref string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[ref]; !ok {
		return
	}
	delete(t.m, ref)
	if t.dropped++; t.dropped > len(t.m)+64 {
		t.m, t.dropped = maps.Clone(t.m), 0
	}
}

func (t *tops) all() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.m)
}

// readState reads the reopen record and deletes it, synced: a crash after
// this start leaves none. It returns nil when there is none; a record that
// does not decode is counted, logged and ignored (the start replays the
// journal instead).
func (n *Node) readState(ctx context.Context) (*reopenState, error) {
	b, err := n.store.Get(ctx, n.stateKey())
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := n.store.Delete(ctx, n.stateKey()); err != nil {
		return nil, err
	}
	if err := n.store.Sync(ctx, n.stateKey()); err != nil {
		return nil, err
	}
	if len(b) > 0 && b[0] != stateVersion {
		// Written by another version (its filters or core laid out
		// otherwise): not an error, the journal is replayed.
		n.log.Info("node: the reopen state is of another version; replaying the journal", "version", b[0], "want", stateVersion)
		return nil, nil
	}
	st, err := decodeState(b)
	if err != nil {
		n.m.reject("reopen_state")
		n.log.Warn("node: the reopen state does not decode; replaying the journal", "err", err)
		return nil, nil
	}
	return &st, nil
}

// writeState writes the reopen record (at Close, after the loop and the
// journal stopped: the core and tops are final).
func (n *Node) writeState(ctx context.Context) error {
	st := reopenState{core: n.core.State(), tops: n.tops.all(), seen: n.seen.snapshot()}
	b, err := encodeState(st)
	if err != nil {
		return err
	}
	return n.store.Put(ctx, n.stateKey(), b)
}

const stateVersion = 2 // 2: the seen filter's bits of an id lie in one cache line (package bloomline)

func encodeState(st reopenState) ([]byte, error) {
	core, err := st.core.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := []byte{stateVersion}
	b = binary.AppendUvarint(b, uint64(len(core)))
	b = append(b, core...)
	b = binary.AppendUvarint(b, uint64(len(st.tops)))
	for _, o := range slices.Sorted(maps.Keys(st.tops)) {
		b = binary.AppendUvarint(b, uint64(len(o)))
		b = append(b, o...)
		b = binary.AppendUvarint(b, st.tops[o])
	}
	b = binary.AppendUvarint(b, uint64(len(st.seen)))
	last := -1
	for i, w := range st.seen {
		if w != 0 {
			b = binary.AppendUvarint(b, uint64(i-last))
			b = binary.LittleEndian.AppendUint64(b, w)
			last = i
		}
	}
	return binary.AppendUvarint(b, 0), nil
}

// Bounds on what decodeState accepts.
const (
	maxStateWords = 1 << 22 // 32 MiB of filter
	maxRefLen     = 64
)

var errStateEncoding = errors.New("node: bad reopen state")

// decodeState decodes what encodeState wrote, checking every length
// against what is left: a corrupt record fails with an error, never a
// panic or a huge allocation.
func decodeState(b []byte) (reopenState, error) {
	var st reopenState
	if len(b) == 0 || b[0] != stateVersion {
		return st, fmt.Errorf("%w: version", errStateEncoding)
	}
	d := varint.Reader{B: b[1:], Base: errStateEncoding}
	if core := d.Bytes(uint64(len(d.B))); d.Err == nil {
		if err := st.core.UnmarshalBinary(core); err != nil {
			return st, err
		}
	}
	n := d.Num()
	if n > uint64(len(d.B)/2) {
		d.Fail("origin count")
	}
	st.tops = make(map[string]uint64, min(n, 1<<16))
	for i := uint64(0); i < n && d.Err == nil; i++ {
		o := string(d.Bytes(maxRefLen))
		st.tops[o] = d.Num()
	}
	words := d.Num()
	if words > maxStateWords {
		d.Fail("filter size")
	}
	if d.Err == nil {
		st.seen = make([]uint64, words)
	}
	for at := int64(-1); d.Err == nil; {
		step := d.Num()
		if step == 0 || d.Err != nil {
			break
		}
		if at += int64(step); uint64(at) >= words || len(d.B) < 8 {
			d.Fail("filter word")
			break
		}
		st.seen[at] = binary.LittleEndian.Uint64(d.B)
		d.B = d.B[8:]
	}
	if d.Err == nil && len(d.B) != 0 {
		d.Fail("trailing bytes")
	}
	return st, d.Err
}

// restoreState restores the core and the seen filter from st when use is
// set and st fits this node, and returns the journal's tops it recorded;
// nil when it did not restore (the caller replays the journal).
func (n *Node) restoreState(st *reopenState, use bool) map[string]uint64 {
	if !use || st == nil {
		return nil
	}
	if len(st.seen) != len(n.seen.words) {
		n.log.Warn("node: the reopen state's filter has another size; replaying the journal")
		return nil
	}
	if err := n.core.Restore(st.core); err != nil {
		n.log.Warn("node: the reopen state does not fit; replaying the journal", "err", err)
		return nil
	}
	n.seen.load(st.seen)
	if st.tops == nil {
		st.tops = map[string]uint64{}
	}
	return st.tops
}

// settled is, per origin, the sequence up to which the core has delivered
// every signal, none given up on (those may still come late): the loop
// writes it after each delivery, and the gossip validator ignores a frame
// whose signals all lie at or below it (staleFrame). They came first by
// the journal: after a heal, GossipSub's gossip brings the frames of its
// last seconds again, and decoding, verifying and offering them again
// cost a third of the heal's CPU. Safe for concurrent use. Only a hint: it
// forgets every origin when it holds maxSettled (a flood of origins), and
// an origin missing from it means no frame of it is ignored.
type settled struct {
	mu sync.RWMutex
	m  map[string]uint64
}

const maxSettled = 4096

func (s *settled) set(origin string, seq uint64) {
	s.mu.Lock()
	if s.m == nil || len(s.m) >= maxSettled {
		s.m = map[string]uint64{}
	}
	if seq > s.m[origin] {
		s.m[origin] = seq
	}
	s.mu.Unlock()
}

func (s *settled) forget(origin string) {
	s.mu.Lock()
	delete(s.m, origin)
	s.mu.Unlock()
}

func (s *settled) get(origin string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[origin]
}
