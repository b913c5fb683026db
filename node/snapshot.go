package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// Snapshot join (Config.SnapshotJoin). A node whose store holds no journal
// asks a Bootstrap peer for a snapshot before it merges anything: the
// peer's reopen state (what it delivered, per origin; the filters of ids;
// the highest journaled sequence of each origin), the journal entries it
// holds that are still retained (Config.Retention, by age), and the list
// of journal blocks it has merged. The joiner checks every entry as it
// checks one from a journal block (a signal at its place, signed by its
// origin), writes it where the journal keeps it and indexes it, marks the
// blocks merged (package crdt, Seed), and then starts as after a clean
// Close with that state: it reads nothing of the journal but what lies
// above what the provider delivered, and go-ds-crdt's walk of the mesh's
// heads stops at the first block the snapshot covered. A join costs time
// in proportion to the retained signals, not to everything ever published.
//
// What the joiner counts as delivered is the provider's delivered, lowered
// to what the provider had journaled (a signal it delivered by gossip
// whose journal entry had not arrived is delivered at the joiner when the
// entry does). The ids of signals that left retention are in the
// provider's filters: an effect whose cause left is not held waiting for
// it. A snapshot that fails (the peer does not serve it, a bad entry, a
// stream cut short) marks no block merged: the join falls back to
// walking the whole DAG, as without the option, and keeps the entries it
// wrote (each one checked).
//
// What the joiner trusts the provider for. Its entries are checked one by
// one; its state is not signed, so the joiner bounds it by what the
// entries prove (snapApply.trim): no origin counts as delivered past the
// highest sequence an entry has or names, no Lamport time is above the
// entries', and an id filter more than half set is not taken. A hostile
// provider can still leave signals out (the joiner lacks them until they
// are written again: the k-provider digest of package journal's design is
// not built), lower what counts as delivered (the joiner then waits
// DepWait for history it will not get), and add ids to its filter up to
// that bound (an effect naming an id the filter seems to hold is
// delivered without waiting for its cause: at the bound, one fresh id in
// sixteen; at an honest filter of a million ids, about one in 400). So
// bootstrap from members you trust. Retention rules by count or bytes are
// not applied (the snapshot leaves out signals past an age limit only).

// snapshotMagic starts a snapshot; the version is its last byte.
const snapshotMagic = "smsnap1\n"

// Bounds of one snapshot's records.
const (
	maxSnapState = 32 << 20
	maxSnapKey   = 1 << 10
	maxSnapValue = 4 << 20
	maxSnapBlock = 128
	// maxSnapBlocks bounds the merged blocks one snapshot lists (as
	// crdt's maxSeedBlocks: a joiner holds their keys until the end).
	maxSnapBlocks = 1 << 20
)

var errSnapshot = errors.New("node: snapshot")

func (n *Node) snapshotProto() protocol.ID {
	return protocol.ID("/signalmesh/" + n.cfg.Mesh + "/snapshot/1")
}

// snapHandler takes a snapshot's records as they are read.
type snapHandler interface {
	state(b []byte) error
	value(key string, prio uint64, value []byte) error
	block(key string) error
}

// readSnapshot reads a snapshot from r into h, up to its end record, whose
// counts must match what was read.
func readSnapshot(r *bufio.Reader, h snapHandler) error {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return fmt.Errorf("%w: header: %w", errSnapshot, err)
	}
	if string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a snapshot of this version", errSnapshot)
	}
	st, err := readChunk(r, maxSnapState, "state")
	if err != nil {
		return err
	}
	if err := h.state(st); err != nil {
		return err
	}
	var values, blocks uint64
	buf := make([]byte, 0, 4096)
	for {
		tag, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("%w: record: %w", errSnapshot, err)
		}
		switch tag {
		case 'v':
			k, err := readChunk(r, maxSnapKey, "key")
			if err != nil {
				return err
			}
			prio, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("%w: priority: %w", errSnapshot, err)
			}
			l, err := binary.ReadUvarint(r)
			if err != nil || l > maxSnapValue {
				return fmt.Errorf("%w: value length %d: %v", errSnapshot, l, err)
			}
			if uint64(cap(buf)) < l {
				buf = make([]byte, l)
			}
			buf = buf[:l]
			if _, err := io.ReadFull(r, buf); err != nil {
				return fmt.Errorf("%w: value: %w", errSnapshot, err)
			}
			if err := h.value(string(k), prio, buf); err != nil {
				return err
			}
			values++
		case 'b':
			k, err := readChunk(r, maxSnapBlock, "block")
			if err != nil {
				return err
			}
			if err := h.block(string(k)); err != nil {
				return err
			}
			blocks++
		case 'e':
			v, err1 := binary.ReadUvarint(r)
			b, err2 := binary.ReadUvarint(r)
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("%w: end: %w", errSnapshot, err)
			}
			if v != values || b != blocks {
				return fmt.Errorf("%w: end counts %d values and %d blocks, read %d and %d", errSnapshot, v, b, values, blocks)
			}
			return nil
		default:
			return fmt.Errorf("%w: unknown record %q", errSnapshot, tag)
		}
	}
}

func readChunk(r *bufio.Reader, limit uint64, what string) ([]byte, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s length: %w", errSnapshot, what, err)
	}
	if l == 0 || l > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", errSnapshot, what, l, limit)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errSnapshot, what, err)
	}
	return b, nil
}

// snapWriter writes a snapshot's records.
type snapWriter struct {
	w              *bufio.Writer
	values, blocks uint64
	scratch        []byte
}

func (w *snapWriter) chunk(b []byte) error {
	w.scratch = binary.AppendUvarint(w.scratch[:0], uint64(len(b)))
	if _, err := w.w.Write(w.scratch); err != nil {
		return err
	}
	_, err := w.w.Write(b)
	return err
}

func (w *snapWriter) header(state []byte) error {
	if _, err := w.w.WriteString(snapshotMagic); err != nil {
		return err
	}
	return w.chunk(state)
}

func (w *snapWriter) value(key string, prio uint64, value []byte) error {
	w.values++
	if err := w.w.WriteByte('v'); err != nil {
		return err
	}
	if err := w.chunk([]byte(key)); err != nil {
		return err
	}
	w.scratch = binary.AppendUvarint(w.scratch[:0], prio)
	if _, err := w.w.Write(w.scratch); err != nil {
		return err
	}
	return w.chunk(value)
}

func (w *snapWriter) block(key string) error {
	w.blocks++
	if err := w.w.WriteByte('b'); err != nil {
		return err
	}
	return w.chunk([]byte(key))
}

func (w *snapWriter) end() error {
	w.scratch = binary.AppendUvarint(append(w.scratch[:0], 'e'), w.values)
	w.scratch = binary.AppendUvarint(w.scratch, w.blocks)
	if _, err := w.w.Write(w.scratch); err != nil {
		return err
	}
	return w.w.Flush()
}

// snapServer owns the snapshot streams this node serves: at most two at a
// time (a third is reset: each reads the whole journal), all ended and
// waited for by Close.
type snapServer struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	slots  chan struct{}
}

func (s *snapServer) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *snapServer) leave() {
	<-s.slots
	s.wg.Done()
}

// close refuses new streams and waits for the ones being served (their
// context, the node's, is done by then).
func (s *snapServer) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// serveSnapshot answers a peer's snapshot request.
func (n *Node) serveSnapshot(s network.Stream) {
	if !n.snaps.enter() {
		_ = s.Reset()
		return
	}
	defer n.snaps.leave()
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Minute)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if err := n.writeSnapshot(ctx, s); err != nil {
		n.log.Debug("node: a snapshot was not served", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	n.m.snapshotsServed.Add(1)
	_ = s.Close()
}

func (n *Node) writeSnapshot(ctx context.Context, s network.Stream) error {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req [1]byte
	if _, err := io.ReadFull(s, req[:]); err != nil || req[0] != 1 {
		return fmt.Errorf("%w: request %v: %v", errSnapshot, req[0], err)
	}
	// The merged blocks before anything else (see package crdt, Seed).
	var blocks []string
	if err := n.repl.MergedBlocks(ctx, func(k string) error {
		if len(blocks) >= maxSnapBlocks {
			return fmt.Errorf("%w: more than %d journal blocks", errSnapshot, maxSnapBlocks)
		}
		blocks = append(blocks, k)
		return nil
	}); err != nil {
		return err
	}
	var st reopenState
	if err := n.do(ctx, func() { st = reopenState{core: n.core.State(), tops: n.tops.all(), seen: n.seen.snapshot()} }); err != nil {
		return err
	}
	b, err := encodeState(st)
	if err != nil {
		return err
	}
	w := &snapWriter{w: bufio.NewWriterSize(s, 64<<10)}
	deadline := func() { _ = s.SetWriteDeadline(time.Now().Add(30 * time.Second)) }
	deadline()
	if err := w.header(b); err != nil {
		return err
	}
	now, ret := time.Now(), n.cfg.Retention
	err = n.repl.Values(ctx, func(key string, value []byte, prio uint64) error {
		if _, _, ok := journal.ParseSignalKey(ds.RawKey(key)); !ok {
			return nil
		}
		if len(ret) > 0 {
			if s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{}); err != nil || ret.Expired(s, now) {
				return nil
			}
		}
		if w.values%1024 == 0 {
			deadline()
		}
		return w.value(key, prio, value)
	})
	if err != nil {
		return err
	}
	for _, k := range blocks {
		if err := w.block(k); err != nil {
			return err
		}
	}
	deadline()
	return w.end()
}

// journalEmpty reports whether the store holds no journal entry.
func (n *Node) journalEmpty(ctx context.Context) (bool, error) {
	res, err := n.store.Query(ctx, query.Query{Prefix: "/mesh/" + n.cfg.Mesh + "/journal/s/k", KeysOnly: true, Limit: 1})
	if err != nil {
		return false, err
	}
	all, err := res.Rest()
	return len(all) == 0, err
}

// joinFromSnapshot asks the Bootstrap peers, in turn, for a snapshot and
// writes the first that arrives whole (see above). It returns whether one
// did; on false the node joins by walking the DAG.
func (n *Node) joinFromSnapshot(ctx context.Context) bool {
	for _, ai := range n.cfg.Bootstrap {
		if ai.ID == n.self {
			continue
		}
		start := time.Now()
		st, err := n.fetchSnapshot(ctx, ai)
		if err != nil {
			n.m.reject("snapshot")
			n.log.Warn("node: no snapshot from a bootstrap peer", "peer", ai.ID, "err", err)
			continue
		}
		n.reopen = st
		n.log.Info("node: joined from a snapshot", "peer", ai.ID, "values", n.snapValues, "took", time.Since(start))
		return true
	}
	return false
}

// snapApply writes a snapshot's records as they come.
type snapApply struct {
	n    *Node
	ctx  context.Context
	seed interface {
		Value(ctx context.Context, key string, value []byte, prio uint64) error
		Block(key string) error
	}
	st     *reopenState
	values int
	// What the entries prove, signed by their origins: per origin the
	// highest sequence a checked entry has or names as a dependency, and
	// the highest Lamport time of one.
	proven  map[string]uint64
	lamport uint64
}

func (a *snapApply) state(b []byte) error {
	if len(b) == 0 || b[0] != stateVersion {
		return fmt.Errorf("%w: a state of another version", errSnapshot)
	}
	st, err := decodeState(b)
	if err != nil {
		return fmt.Errorf("%w: state: %w", errSnapshot, err)
	}
	a.st = &st
	return nil
}

// clampDelivered makes what the joiner counts as delivered no more than
// the provider had journaled (what it delivered by gossip alone comes to
// the joiner by the journal, and is delivered then).
func clampDelivered(st *reopenState) {
	for o, d := range st.core.Delivered {
		if t := st.tops[o]; d > t {
			if t == 0 {
				delete(st.core.Delivered, o)
			} else {
				st.core.Delivered[o] = t
			}
		}
	}
	for o, f := range st.core.Frontier {
		if f.Seq > st.core.Delivered[o] {
			delete(st.core.Frontier, o)
		}
	}
}

func (a *snapApply) value(key string, prio uint64, value []byte) error {
	k := ds.NewKey(key)
	if k.String() != key {
		return fmt.Errorf("%w: %w: key %q", errSnapshot, errEntryKey, key)
	}
	ref, seq, ok := journal.ParseSignalKey(k)
	if !ok {
		return fmt.Errorf("%w: %w: key %q", errSnapshot, errEntryKey, key)
	}
	s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{})
	if err != nil {
		return fmt.Errorf("%w: entry %s: %w", errSnapshot, key, err)
	}
	m, err := journal.MetaOf(s)
	if err != nil {
		return fmt.Errorf("%w: entry %s: %w", errSnapshot, key, err)
	}
	if m.Origin != ref || m.Seq != seq {
		return fmt.Errorf("%w: %w: %s holds %s:%d", errSnapshot, errEntryKey, key, m.Origin, m.Seq)
	}
	if !testNoVerify {
		if err := a.n.ver.verify(s, value); err != nil {
			return fmt.Errorf("%w: entry %s: %w", errSnapshot, key, err)
		}
	}
	v := make([]byte, len(value))
	copy(v, value)
	if err := a.seed.Value(a.ctx, key, v, prio); err != nil {
		return err
	}
	a.n.indexLater(m)
	a.values++
	if a.proven == nil {
		a.proven = map[string]uint64{}
	}
	a.proven[m.Origin] = max(a.proven[m.Origin], m.Seq)
	for _, d := range m.Deps {
		a.proven[d.Origin] = max(a.proven[d.Origin], d.Seq)
	}
	a.lamport = max(a.lamport, m.Lamport)
	return nil
}

// trim bounds the provider's state by what the entries prove (the state
// itself is signed by nobody): no origin counts as delivered or journaled
// past what a checked entry has or names, no Lamport time is above the
// entries' highest, and an id filter more than half set is not taken (at
// that fill one fresh id in sixteen would look present; an honest provider's
// fills so after about three million ids, and its joiner then waits
// CauseWait for the expired causes it would have known).
// So a provider that forges its state can make the joiner wait (DepWait,
// CauseWait) for what it left out, not skip what comes later.
func (a *snapApply) trim() {
	st := a.st
	for o, d := range st.core.Delivered {
		if p := a.proven[o]; d > p {
			st.core.Delivered[o] = p
		}
	}
	for o, t := range st.tops {
		st.tops[o] = min(t, a.proven[o])
	}
	for o, l := range st.core.LastLamport {
		st.core.LastLamport[o] = min(l, a.lamport)
	}
	st.core.MaxLamport = min(st.core.MaxLamport, a.lamport)
	st.core.Lost = nil
	if overHalf(st.seen) {
		a.n.m.reject("snapshot_filter")
		clear(st.seen)
	}
	if overHalf(st.core.Bloom) {
		a.n.m.reject("snapshot_filter")
		clear(st.core.Bloom)
	}
	clampDelivered(st)
}

func overHalf(words []uint64) bool {
	set := 0
	for _, w := range words {
		set += bits.OnesCount64(w)
	}
	return set > 32*len(words)
}

func (a *snapApply) block(key string) error { return a.seed.Block(key) }

// fetchSnapshot reads a snapshot from ai and writes it into the held
// journal, and returns the state to start from.
func (n *Node) fetchSnapshot(ctx context.Context, ai peer.AddrInfo) (*reopenState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := n.host.Connect(ctx, ai); err != nil {
		return nil, err
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "snapshot"), ai.ID, n.snapshotProto())
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer func() { _ = s.Reset() }()
	if _, err := s.Write([]byte{1}); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	seed, err := n.repl.Seed(ctx)
	if err != nil {
		return nil, err
	}
	a := &snapApply{n: n, ctx: ctx, seed: seed}
	r := bufio.NewReaderSize(&deadlineReader{s}, 64<<10)
	if err := readSnapshot(r, a); err != nil {
		n.flushIndex() // the entries written are journaled: their index entries too
		return nil, err
	}
	a.trim()
	if err := seed.Commit(ctx); err != nil {
		n.flushIndex()
		return nil, err
	}
	n.flushIndex()
	if n.indexBad.Load() {
		return nil, fmt.Errorf("%w: the index was not written", errSnapshot)
	}
	// The index holds every entry of the journal: the start need not
	// index it again (see checkIndex).
	for _, k := range []ds.Key{n.cleanKey(), n.indexVersionKey()} {
		v := []byte(nil)
		if k == n.indexVersionKey() {
			v = []byte(indexVersion)
		}
		if err := n.store.Put(ctx, k, v); err != nil {
			return nil, err
		}
	}
	if err := n.store.Sync(ctx, ds.NewKey("/signalmesh/"+n.cfg.Mesh)); err != nil {
		return nil, err
	}
	// The ids the provider had journaled: an effect naming one of them
	// that is not here left retention before the join (causal.Params.Gone).
	if len(a.st.seen) != goneBits/64 {
		return nil, fmt.Errorf("%w: a filter of %d words", errSnapshot, len(a.st.seen))
	}
	g := n.goneSet()
	g.mu.Lock()
	g.cur.load(a.st.seen)
	g.n = goneRotate // full: the next id pruned starts a generation
	g.mu.Unlock()
	if err := n.saveGone(ctx); err != nil {
		return nil, err
	}
	// A start after a crash begins from the snapshot's state too: the
	// journal lacks what left retention before the join.
	if err := n.putCheckpoint(ctx, *a.st); err != nil {
		return nil, err
	}
	if err := n.store.Sync(ctx, ds.NewKey("/signalmesh/"+n.cfg.Mesh)); err != nil {
		return nil, err
	}
	n.snapValues = a.values
	return a.st, nil
}

// deadlineReader gives every read of a stream 30 s.
type deadlineReader struct{ s network.Stream }

func (d *deadlineReader) Read(p []byte) (int, error) {
	_ = d.s.SetReadDeadline(time.Now().Add(30 * time.Second))
	return d.s.Read(p)
}
