package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// Consistency says what Publish promises about a signal.
type Consistency struct {
	weak   bool
	quorum int
	memory bool // QuorumInMemory: acks of in-memory replicas count
}

// Quorum(k) signals are Eventual, and PublishWith returns only once k other
// peers have acknowledged that every signal is durably in their journal, or
// fails with a *QuorumError (errors.Is ErrQuorum) when ctx ends first. The
// signals stay journaled and still converge either way. It is a durability
// promise, not linearizability: readers elsewhere may see the signals before
// or after PublishWith returns, and concurrent publishers are not ordered.
//
// Only replicas that keep their journal on disk (Config.DataDir)
// acknowledge in a way Quorum counts: an in-memory replica's journal is
// gone with its process, so its acknowledgement is no durability. A mesh
// of in-memory peers (tests, demos, caches) that wants the wait anyway
// uses QuorumInMemory.
func Quorum(k int) Consistency { return Consistency{quorum: k} }

// QuorumInMemory(k) is Quorum(k) that also counts the acknowledgements of
// replicas whose journal is in memory (no Config.DataDir): PublishWith
// returns once k other peers hold every signal in their journal, which
// for those lasts only while they run.
func QuorumInMemory(k int) Consistency { return Consistency{quorum: k, memory: true} }

var (
	// Weak signals are gossiped only: not journaled, not causally ordered,
	// delivered best-effort (a metric, a presence ping). They may never arrive.
	Weak = Consistency{weak: true}
	// Eventual signals (the default) are journaled and gossiped: every
	// connected replica converges to the same journal and delivers them in
	// causal order.
	Eventual = Consistency{}
)

func (c Consistency) String() string {
	switch {
	case c.weak:
		return "weak"
	case c.quorum > 0 && c.memory:
		return fmt.Sprintf("quorum-in-memory(%d)", c.quorum)
	case c.quorum > 0:
		return fmt.Sprintf("quorum(%d)", c.quorum)
	}
	return "eventual"
}

type commitReq struct {
	sigs   []*signalmesh.Signal
	places []place    // set by the committer before done: each signal's place in the journal (an earlier copy's, for a retry)
	done   chan error // buffer 1
}

// PublishFunc publishes signals; it is what PublishMiddleware wraps.
type PublishFunc func(ctx context.Context, c Consistency, sigs []*signalmesh.Signal) error

// PublishMiddleware wraps publishing (see Config.PublishMiddleware).
type PublishMiddleware func(PublishFunc) PublishFunc

// Publish publishes signals with Eventual consistency (see PublishWith).
func (n *Node) Publish(ctx context.Context, sigs ...*signalmesh.Signal) error {
	return n.PublishWith(ctx, Eventual, sigs...)
}

// PublishWith validates the signals, stamps them (publishing peer, vector
// clock), writes them to the journal and gossips them. The signals passed in
// are not modified: the node publishes copies.
//
// With Eventual consistency it returns once the local journal write is
// durable (the signals then survive a restart and reach every replica that
// connects, even if the gossip is lost). If ctx ends while the signals wait
// for the committer, nothing was published; once the committer has them,
// PublishWith waits for the commit. With Weak, it returns once the signals
// are handed to GossipSub.
func (n *Node) PublishWith(ctx context.Context, c Consistency, sigs ...*signalmesh.Signal) error {
	return n.publish(ctx, c, sigs)
}

func (n *Node) publishCore(ctx context.Context, c Consistency, sigs []*signalmesh.Signal) error {
	if n.ctx.Err() != nil || n.closing.Load() {
		return ErrClosed
	}
	if len(sigs) == 0 {
		return nil
	}
	if c.quorum < 0 {
		return fmt.Errorf("node: Quorum(%d)", c.quorum)
	}
	cp := make([]*signalmesh.Signal, len(sigs))
	for i, s := range sigs {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("node: publish signal %d: %w", i, err)
		}
		cp[i] = s.Clone()
		if cp[i].Extensions == nil {
			cp[i].Extensions = make(map[string]any, 2)
		}
		cp[i].Extensions[signalmesh.ExtPeer] = n.self.String()
		// With what the committer adds, at its largest: valid there, or refused here.
		cp[i].Extensions[signalmesh.ExtSig] = sigPlaceholder
		if !c.weak {
			cp[i].Extensions[signalmesh.ExtCausal] = n.largestStamp
			if c.quorum > 0 {
				cp[i].Extensions[extQuorum] = int32(c.quorum)
			}
		}
		if err := cp[i].Validate(); err != nil {
			return fmt.Errorf("node: publish signal %d, with the node's extensions (%s, %s, %s): %w", i,
				signalmesh.ExtPeer, signalmesh.ExtCausal, signalmesh.ExtSig, err)
		}
		delete(cp[i].Extensions, signalmesh.ExtCausal)
		delete(cp[i].Extensions, signalmesh.ExtSig)
	}
	// Called by an OverflowBlock handler, the loop must not wait for that
	// handler until the call returns: the committer hands each batch to
	// the loop, and a Quorum wait needs the journaler, whose commit runs
	// the put hook, which feeds the loop.
	defer n.reenter(ctx)()
	if c.weak {
		return n.publishWeak(ctx, cp)
	}
	req := commitReq{sigs: cp, places: make([]place, len(cp)), done: make(chan error, 1)}
	if err := n.toCommitter(ctx, req); err != nil {
		return err
	}
	n.m.published.Add(int64(len(cp)))
	if c.quorum > 0 {
		ids := make([]string, len(cp))
		for i, s := range cp {
			ids[i] = s.ID
		}
		return n.awaitQuorum(ctx, ids, req.places, c.quorum, c.memory, 250*time.Millisecond)
	}
	return nil
}

// toCommitter queues req for the committer and waits for its commit.
func (n *Node) toCommitter(ctx context.Context, req commitReq) error {
	select {
	case n.commitQ <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.ctx.Done():
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-n.ctx.Done():
		return ErrClosed
	}
}

func (n *Node) publishWeak(ctx context.Context, sigs []*signalmesh.Signal) error {
	wires, err := n.signAll(sigs)
	if err != nil {
		return err
	}
	for _, s := range sigs {
		if !n.send(inbound{s: s, via: viaLocal}) {
			return ErrClosed
		}
	}
	n.m.published.Add(int64(len(sigs)))
	n.gossip(ctx, wires)
	return nil
}

// signAll signs sigs as their origin, as one batch (one signature, a
// Merkle proof in each), and returns their wire forms, which the verifier
// then knows: they come back through the put hook.
func (n *Node) signAll(sigs []*signalmesh.Signal) ([][]byte, error) {
	if !testNoVerify {
		if err := SignBatch(n.cfg.Mesh, n.key, sigs); err != nil {
			return nil, err
		}
	}
	wires, err := encodeAll(sigs)
	if err != nil {
		return nil, err
	}
	for _, w := range wires {
		n.ver.known(w)
	}
	return wires, nil
}

// encodeAll returns the wire forms of sigs.
func encodeAll(sigs []*signalmesh.Signal) ([][]byte, error) {
	wires := make([][]byte, len(sigs))
	for i, s := range sigs {
		w, err := s.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("node: encode %s: %w", s.ID, err)
		}
		wires[i] = w
	}
	return wires, nil
}

// gossip is the fast path: the signals' wire forms go out in frames; best
// effort, failures are counted, the journal path makes up for them.
func (n *Node) gossip(ctx context.Context, wires [][]byte) {
	for _, f := range frameWires(wires) {
		if err := n.topic.Publish(ctx, f); err != nil {
			n.m.drop("gossip_publish")
		}
	}
}

// gossiper publishes what the committer made durable, in commit order. Its
// queue is bounded; when it is full the committer drops the gossip for that
// batch (counted): the journal path still delivers it. What queued up while
// it published goes out together, in as few frames as fit: under load,
// fewer and larger GossipSub messages (each one decoded and checked once by
// every peer) keep the CPU per signal down, and so the queues short.
func (n *Node) gossiper() {
	defer n.wg.Done()
	for wires := range n.gossipQ {
	more:
		for len(wires) < n.p.MaxBatch {
			select {
			case w, ok := <-n.gossipQ:
				if !ok {
					break more
				}
				wires = append(wires[:len(wires):len(wires)], w...) // a copy: the journaler holds the first slice
			default:
				break more
			}
		}
		n.gossip(n.ctx, wires)
	}
}

// committer stamps signals in the order Publish queued them and makes them
// durable in the outbox, a plain (not replicated) part of the store: one
// batch and one fsync per group of publishes. Stamping here, in commit
// order, means a peer's sequence numbers are durable without gaps. The
// journaler then moves them into the CRDT journal in larger batches.
func (n *Node) committer() {
	defer n.wg.Done()
	defer close(n.journalQ)
	defer close(n.gossipQ)
	seq := n.ownSeq
	for {
		var batch []commitReq
		select {
		case <-n.ctx.Done():
			return
		case r := <-n.commitQ:
			batch = n.gather(r)
		}
		seq = n.commit(batch, seq)
	}
}

// gather collects requests for one commit: what is queued already, up to
// MaxBatch signals, and, when MaxBatchDelay is set, what comes within that
// delay after the first. Without a delay batches still form under load:
// publishes that arrive while a commit runs wait for the next one.
func (n *Node) gather(first commitReq) []commitReq {
	batch, count := []commitReq{first}, len(first.sigs)
	yielded := false
	var timeout <-chan time.Time
	if n.p.MaxBatchDelay > 0 {
		timer := time.NewTimer(n.p.MaxBatchDelay)
		defer timer.Stop()
		timeout = timer.C
	}
	for count < n.p.MaxBatch {
		select {
		case r := <-n.commitQ:
			batch = append(batch, r)
			count += len(r.sigs)
			continue
		case <-n.ctx.Done():
			return batch
		default:
		}
		if timeout == nil {
			if !yielded {
				// Let publishers that are ready to run queue theirs: on a
				// busy machine they join this batch (a signature per 32
				// signals, not per call, one frame); on an idle one this
				// costs a microsecond.
				yielded = true
				runtime.Gosched()
				continue
			}
			return batch
		}
		select {
		case r := <-n.commitQ:
			batch = append(batch, r)
			count += len(r.sigs)
		case <-timeout:
			return batch
		case <-n.ctx.Done():
			return batch
		}
	}
	return batch
}

func (n *Node) commit(batch []commitReq, seq uint64) uint64 {
	self := n.self.String()
	base := n.base.Load()
	if base.truncated > 0 {
		n.m.drop("deps_truncated")
	}
	var all []*signalmesh.Signal
	var added []identity
	type slot struct{ req, i int }
	var slots []slot // of each signal in all: where its place goes
	errs := make([]error, len(batch))
	for i, r := range batch {
		mark, stamped := len(added), len(all)
		for j, s := range r.sigs {
			id, digest := identityOf(s), journal.ContentDigest(s)
			state, at := n.published(id, digest)
			switch state {
			case pubSame:
				n.m.deduped.Add(1) // publishing is idempotent: a retry publishes nothing twice
				r.places[j] = at
				continue
			case pubConflict:
				errs[i] = fmt.Errorf("%w: source %q, id %q", ErrConflict, s.Source, s.ID)
			}
			if errs[i] != nil {
				break
			}
			n.recent.add(id, digest, place{}) // the place once stamped
			added = append(added, id)
			all = append(all, s)
			slots = append(slots, slot{i, j})
		}
		if errs[i] != nil { // the whole call fails: forget what it stamped
			for _, id := range added[mark:] {
				n.recent.forget(id)
			}
			added, all, slots = added[:mark], all[:stamped], slots[:stamped]
		}
	}
	for k, s := range all {
		seq++
		n.lamport = max(n.lamport, base.lamport) + 1
		s.Extensions[signalmesh.ExtPeer] = self
		s.Extensions[signalmesh.ExtCausal] = causal.Stamp{Seq: seq, Lamport: n.lamport, Deps: base.deps}.Format()
		at := place{Origin: n.selfRef, Seq: seq}
		batch[slots[k].req].places[slots[k].i] = at
		n.recent.add(added[k], journal.ContentDigest(s), at)
	}
	for _, r := range batch { // a signal given twice in one batch: the place of its first copy
		for j, at := range r.places {
			if at == (place{}) && len(all) > 0 {
				if e, ok := n.recent.get(identityOf(r.sigs[j])); ok {
					r.places[j] = e.at
				}
			}
		}
	}
	first := seq - uint64(len(all)) + 1
	wires, err := n.signAll(all) // once, for the outbox, the gossip and the journal
	if err == nil && len(all) > 0 {
		err = n.outboxWrite(wires, first)
	}
	if err != nil {
		seq -= uint64(len(all)) // nothing was written: the numbers are free again
		for _, id := range added {
			n.recent.forget(id)
		}
	}
	if err == nil && len(all) > 0 {
		n.handed.committed.Store(seq)
	}
	for i, r := range batch {
		r.done <- cmp.Or(errs[i], err)
	}
	if err != nil || len(all) == 0 {
		return seq
	}
	// Gossip and local delivery at once, journaling in the background.
	select {
	case n.gossipQ <- wires:
	default:
		n.m.drop("gossip_queue_full")
	}
	for _, s := range all {
		if !n.send(inbound{s: s, via: viaLocal}) {
			return seq
		}
	}
	select {
	case n.journalQ <- outboxed{sigs: all, wires: wires, first: first}:
	case <-n.ctx.Done():
	}
	return seq
}

// ErrConflict: a signal with this (source, id) was published before with
// other content. CloudEvents makes (source, id) an event's identity: publish
// the same event again (an idempotent retry) or give it a new id.
var ErrConflict = errors.New("node: conflict: (source, id) already published with other content")

// identity is a signal's (source, id).
type identity struct{ source, id string }

func identityOf(s *signalmesh.Signal) identity { return identity{s.Source, s.ID} }

type pubState int

const (
	pubNew pubState = iota
	pubSame
	pubConflict
)

// published reports whether a signal with this identity was published
// before, here or on any peer whose signals this node has journaled, and
// with the same content (then publishing it again must not give it a
// second sequence number) or not (a conflict). It remembers the identities
// it committed lately (the last 65,536) and asks the journal's index for
// older ones that the Bloom filter of journaled ids may hold.
// Only the committer calls it.
func (n *Node) published(id identity, digest uint64) (pubState, place) {
	if e, ok := n.recent.get(id); ok {
		if e.digest == digest {
			return pubSame, e.at
		}
		return pubConflict, place{}
	}
	if !n.seen.mayHave(id.id) {
		return pubNew, place{}
	}
	cs, err := n.jr.Copies(context.WithoutCancel(n.ctx), id.id)
	if err != nil {
		return pubNew, place{}
	}
	state := pubNew
	for _, c := range cs {
		if c.Source != id.source {
			continue
		}
		if c.Digest == digest {
			return pubSame, c.Ref
		}
		state = pubConflict
	}
	return state, place{}
}

// idSet is a bounded map of identities to content digests and journal
// places: past its size the oldest are forgotten.
type idSet struct {
	ids  map[identity]idEntry
	ring []identity
	next int
}

type idEntry struct {
	digest uint64
	at     place
}

func newIDSet(size int) *idSet {
	return &idSet{ids: make(map[identity]idEntry, size), ring: make([]identity, size)}
}

func (s *idSet) get(id identity) (idEntry, bool) {
	e, ok := s.ids[id]
	return e, ok
}

// add adds id with its digest and place.
func (s *idSet) add(id identity, digest uint64, at place) {
	if _, ok := s.ids[id]; ok {
		s.ids[id] = idEntry{digest, at}
		return
	}
	if old := s.ring[s.next]; old != (identity{}) {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.ids[id] = idEntry{digest, at}
}

func (s *idSet) forget(id identity) { delete(s.ids, id) }

// outboxed are signals in the outbox, with their wire forms, and
// consecutive sequence numbers from first.
type outboxed struct {
	sigs  []*signalmesh.Signal
	wires [][]byte
	first uint64
}

func (n *Node) outboxKey(seq uint64) ds.Key {
	return ds.NewKey(fmt.Sprintf("/signalmesh/%s/outbox/%020d", n.cfg.Mesh, seq))
}

func (n *Node) outboxWrite(wires [][]byte, first uint64) error {
	ctx := context.WithoutCancel(n.ctx) // a started commit finishes, even during Close
	b, err := n.store.Batch(ctx)
	if err != nil {
		return fmt.Errorf("node: outbox batch: %w", err)
	}
	for i, v := range wires {
		if err := b.Put(ctx, n.outboxKey(first+uint64(i)), v); err != nil {
			return fmt.Errorf("node: outbox put: %w", err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("node: outbox commit: %w", err)
	}
	if err := n.store.Sync(ctx, ds.NewKey("/signalmesh/"+n.cfg.Mesh+"/outbox")); err != nil {
		return fmt.Errorf("node: sync outbox: %w", err)
	}
	return nil
}

// journaler moves signals from the outbox into the CRDT journal, gathering
// up to JournalBatch signals or JournalDelay, then removes them from the
// outbox. It drains what the committer sent before stopping, so that Close
// leaves the outbox empty when it can; what is left is journaled at the
// next start.
func (n *Node) journaler() {
	defer n.wg.Done()
	if len(n.pending) > 0 {
		if err := n.journalWrite(n.pending); err != nil {
			n.log.Error("node: journaling the outbox left from the last run failed", "err", err)
		}
		n.pending = nil
	}
	for first := range n.journalQ {
		batch := []outboxed{first}
		count := len(first.sigs)
		timer := time.NewTimer(n.p.JournalDelay)
	gather:
		for count < n.p.JournalBatch {
			select {
			case o, ok := <-n.journalQ:
				if !ok {
					break gather
				}
				batch = append(batch, o)
				count += len(o.sigs)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		if err := n.journalWrite(batch); err != nil {
			n.log.Error("node: journal write failed; the signals stay in the outbox until restart", "err", err)
			n.m.drop("journal_write")
		}
	}
}

func (n *Node) journalWrite(batch []outboxed) error {
	ctx := context.WithoutCancel(n.ctx)
	b, err := n.repl.Batch(ctx)
	if err != nil {
		return err
	}
	for _, o := range batch {
		for i, s := range o.sigs {
			e, _, err := journal.Entries(s, o.wires[i])
			if err != nil {
				return err
			}
			if err := b.Put(ctx, e.Key, e.Value); err != nil {
				return err
			}
		}
	}
	if err := b.Commit(ctx); err != nil {
		return err
	}
	if err := n.repl.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	last := uint64(0)
	for _, o := range batch {
		last = max(last, o.first+uint64(len(o.sigs))-1)
	}
	n.handed.wrote(last)
	del, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for _, o := range batch {
		for i := range o.sigs {
			if err := del.Delete(ctx, n.outboxKey(o.first+uint64(i))); err != nil {
				return err
			}
		}
	}
	return del.Commit(ctx)
}
