package node

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// extQuorum marks a signal published with Quorum(k): replicas acknowledge
// it once it is durably in their journal.
const extQuorum = "meshquorum"

// ErrQuorum is wrapped by a *QuorumError.
var ErrQuorum = errors.New("node: quorum not reached")

// QuorumError is returned by a Quorum(k) publish whose context ended before
// k other peers acknowledged every signal. The signals are journaled
// locally all the same and still converge; publishing them again (the same
// source, id and content) publishes nothing twice and waits for the
// acknowledgements again, so a retry succeeds once k peers hold them.
type QuorumError struct {
	Want  int
	Acked map[string]int // signal id -> peers that acknowledged it (the fewest, for an id given twice)
	Err   error          // the context's error
}

func (e *QuorumError) Error() string {
	low := e.Want
	if len(e.Acked) == 0 {
		low = 0 // nothing named (a hand-off): say so, not the quorum
	}
	for _, n := range e.Acked {
		low = min(low, n)
	}
	return fmt.Sprintf("node: quorum of %d not reached (fewest acks: %d): %v", e.Want, low, e.Err)
}

func (e *QuorumError) Unwrap() []error { return []error{ErrQuorum, e.Err} }

// How acknowledgements work.
//
// An ack names journal places, (origin ref, sequence): a place is one
// signal, whatever its id, so two signals with one id (in one call, in
// concurrent calls, or from two sources) cannot be confused. A replica
// acknowledges a place only after the journal entry is committed in its
// store (go-ds-crdt calls its put hook before it commits the batch, so the
// acker reads the entry back) and the store is synced. Acks count only
// from distinct peers other than this one and, when Config.Allow is set,
// only from peers on it. A replica whose store is the in-memory default
// acknowledges with another kind (ackHeld): its Sync keeps nothing, so
// Quorum does not count it; QuorumInMemory and Close's hand-off do.
//
// A publisher that waits asks for the places still short of k acks, at
// 250 ms and then at doubling intervals up to 4 s: every replica that holds
// a place acknowledges it again. That makes up for lost acks, and lets a
// retry of a signal journaled long ago (deduplicated, so nobody journals
// it anew) gather the acks of the replicas that hold it.

// place is a signal's place in the journal.
type place = causal.Ref

// quorum counts acknowledgements for the places Quorum publishes wait for.
// A leaf type with its own lock: acks arrive on the ack reader, waits happen
// in Publish.
type quorum struct {
	mu      sync.Mutex
	acks    map[place]*ackCount
	changed chan struct{} // closed (and replaced) when a waited-for place gains an ack
}

type ackCount struct {
	peers map[peer.ID]bool // acked, true: on disk (a memory ack may be followed by none better)
	disk  int              // peers that acked it on disk
	refs  int              // waiting calls
}

// held is how many peers acked: on disk, or also in memory.
func (c *ackCount) held(memory bool) int {
	if c == nil {
		return 0
	}
	if memory {
		return len(c.peers)
	}
	return c.disk
}

func (q *quorum) init() {
	q.acks = map[place]*ackCount{}
	q.changed = make(chan struct{})
}

func (q *quorum) register(ps []place) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, p := range ps {
		c := q.acks[p]
		if c == nil {
			c = &ackCount{peers: map[peer.ID]bool{}}
			q.acks[p] = c
		}
		c.refs++
	}
}

func (q *quorum) release(ps []place) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, p := range ps {
		if c := q.acks[p]; c != nil {
			if c.refs--; c.refs <= 0 {
				delete(q.acks, p)
			}
		}
	}
}

// ack records from's acknowledgement of ps: on disk (disk), or held in
// memory only.
func (q *quorum) ack(from peer.ID, ps []place, disk bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	more := false
	for _, p := range ps {
		if c := q.acks[p]; c != nil {
			if was, ok := c.peers[from]; !ok || disk && !was {
				c.peers[from] = disk
				if disk {
					c.disk++
				}
				more = true
			}
		}
	}
	if more {
		close(q.changed)
		q.changed = make(chan struct{})
	}
}

// short returns the places with fewer than k acks (on disk, or also in
// memory), and a channel closed at the next new ack.
func (q *quorum) short(ps []place, k int, memory bool) ([]place, <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []place
	for _, p := range ps {
		if q.acks[p].held(memory) < k {
			out = append(out, p)
		}
	}
	return out, q.changed
}

func (q *quorum) count(p place, memory bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.acks[p].held(memory)
}

// awaitQuorum waits until k peers acknowledged every place, on disk or,
// with memory, also in memory; ids are the signals' ids, for the error.
// It first asks after firstAsk, and then announces the journal heads with
// every ask when firstAsk is 0 (Close's hand-off: the peers may not know
// the heads yet).
func (n *Node) awaitQuorum(ctx context.Context, ids []string, places []place, k int, memory bool, firstAsk time.Duration) error {
	ps := slices.Clone(places)
	slices.SortFunc(ps, func(a, b place) int { return cmp.Or(cmp.Compare(a.Origin, b.Origin), cmp.Compare(a.Seq, b.Seq)) })
	ps = slices.Compact(ps)
	n.quorum.register(ps)
	defer n.quorum.release(ps)
	wait := max(firstAsk, 250*time.Millisecond)
	timer := time.NewTimer(firstAsk)
	defer timer.Stop()
	for {
		missing, changed := n.quorum.short(ps, k, memory)
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			if firstAsk == 0 {
				_ = n.repl.Announce(ctx)
			}
			n.ask(missing)
			wait = min(2*wait, 4*time.Second)
			timer.Reset(wait)
		case <-ctx.Done():
			acked := make(map[string]int, len(ids))
			for i, id := range ids {
				c := n.quorum.count(places[i], memory)
				if old, ok := acked[id]; !ok || c < old {
					acked[id] = c
				}
			}
			return &QuorumError{Want: k, Acked: acked, Err: ctx.Err()}
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
}

// ask asks the mesh to acknowledge places again.
func (n *Node) ask(ps []place) {
	for len(ps) > 0 {
		m := min(len(ps), maxAckPlaces)
		if err := n.publishSealed(n.ackTopic, encodeAck(ackAsk, ps[:m])); err != nil && n.ctx.Err() == nil {
			n.m.drop("ack_publish")
		}
		ps = ps[m:]
	}
}

// Messages on the ack topic: a kind byte ('A' acknowledges, 'Q' asks),
// a uvarint count, then per place a uvarint length, the origin ref and a
// uvarint sequence number.
const (
	ackAck       = 'A' // on disk: committed and synced
	ackHeld      = 'M' // committed in a replica whose store is in memory: gone with its process
	ackAsk       = 'Q'
	maxAckPlaces = 4096
)

// ackWant is a place for the acker, and whether only an ask wants it.
type ackWant struct {
	p     place
	asked bool
}

type ackMsg struct {
	kind   byte
	places []place
}

func encodeAck(kind byte, ps []place) []byte {
	b := append(make([]byte, 0, 1+len(ps)*(causal.RefLen+4)), kind)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.AppendUvarint(b, uint64(len(p.Origin)))
		b = append(b, p.Origin...)
		b = binary.AppendUvarint(b, p.Seq)
	}
	return b
}

var errBadAck = errors.New("node: malformed ack")

func decodeAck(b []byte) (ackMsg, error) {
	if len(b) < 2 || (b[0] != ackAck && b[0] != ackHeld && b[0] != ackAsk) {
		return ackMsg{}, errBadAck
	}
	m := ackMsg{kind: b[0]}
	b = b[1:]
	n, k := uvarint(b)
	if k <= 0 || n == 0 || n > maxAckPlaces || n > uint64(len(b)) {
		return ackMsg{}, errBadAck
	}
	b = b[k:]
	m.places = make([]place, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := uvarint(b)
		if k <= 0 || l != causal.RefLen || l > uint64(len(b)-k) {
			return ackMsg{}, errBadAck
		}
		ref := string(b[k : k+int(l)])
		b = b[k+int(l):]
		seq, k := uvarint(b)
		if k <= 0 || seq == 0 {
			return ackMsg{}, errBadAck
		}
		b = b[k:]
		m.places = append(m.places, place{Origin: ref, Seq: seq})
	}
	if len(b) != 0 {
		return ackMsg{}, errBadAck
	}
	return m, nil
}

// validateAck checks an ack message's seal (its sender) and decodes it.
func (n *Node) validateAck(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	from, body, err := n.openSealed(msg)
	if err != nil {
		n.m.reject("ack")
		return pubsub.ValidationReject
	}
	m, err := decodeAck(body)
	if err != nil {
		n.m.reject("ack")
		return pubsub.ValidationReject
	}
	msg.ValidatorData = opened[ackMsg]{from, m}
	return pubsub.ValidationAccept
}

// member reports whether p's acks count: another peer, on the allowlist
// when there is one.
func (n *Node) member(p peer.ID) bool {
	return p != n.self && (&gater{allow: n.cfg.Allow}).allowed(p)
}

// readAcks records acknowledgements from other peers and passes their
// asks to the acker.
func (n *Node) readAcks() {
	defer n.wg.Done()
	for {
		msg, err := n.ackSub.Next(n.ctx)
		if err != nil {
			return
		}
		o, ok := msg.ValidatorData.(opened[ackMsg])
		if !ok || o.from == n.self {
			continue
		}
		if !n.member(o.from) {
			n.m.reject("ack_not_member")
			continue
		}
		m := o.v
		if m.kind == ackAck || m.kind == ackHeld {
			n.quorum.ack(o.from, m.places, m.kind == ackAck)
			continue
		}
		for _, p := range m.places {
			n.wantsAckAt(p, true)
		}
	}
}

// acker acknowledges places once they are committed in this replica's
// journal and the store is synced. It gathers places for 5 ms; a place
// whose entry is not readable yet (the put hook runs before go-ds-crdt
// commits the batch) waits for a later round, up to ackPatience.
func (n *Node) acker() {
	defer n.wg.Done()
	const ackPatience = 30 * time.Second
	kind := byte(ackAck)
	if n.volatile {
		kind = ackHeld // an in-memory store's Sync keeps nothing: say so (Quorum does not count it)
	}
	pending := map[place]time.Time{} // bounded by the queue: at most cap(ackQ) more per round
	asked := map[place]bool{}        // pending places that only an ask wants: looked up once
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(pending) == 0 {
			select {
			case <-n.ctx.Done():
				return
			case w := <-n.ackQ:
				pending[w.p] = time.Now()
				if w.asked {
					asked[w.p] = true
				}
			}
		}
		timer := time.NewTimer(5 * time.Millisecond)
	gather:
		for len(pending) < 4*maxAckPlaces {
			select {
			case w := <-n.ackQ:
				if _, ok := pending[w.p]; !ok {
					pending[w.p] = time.Now()
					if w.asked {
						asked[w.p] = true
					}
				} else if !w.asked {
					delete(asked, w.p) // the put hook wants it too: wait for the commit
				}
			case <-timer.C:
				break gather
			case <-n.ctx.Done():
				timer.Stop()
				return
			}
		}
		timer.Stop()
		var ready []place
		now := time.Now()
		for p, since := range pending {
			ok, err := n.repl.Has(n.ctx, journal.SignalKey(p.Origin, p.Seq))
			switch {
			case err == nil && ok:
				ready = append(ready, p)
				delete(pending, p)
				delete(asked, p)
			case asked[p] || now.Sub(since) > ackPatience:
				delete(pending, p) // not here: an ask for a signal this replica lacks
				delete(asked, p)
			}
		}
		if len(ready) > 0 {
			if err := n.repl.Sync(n.ctx, dsRoot); err != nil {
				n.log.Warn("node: sync before ack", "err", err)
				continue
			}
			for len(ready) > 0 {
				m := min(len(ready), maxAckPlaces)
				if err := n.publishSealed(n.ackTopic, encodeAck(kind, ready[:m])); err != nil && n.ctx.Err() == nil {
					n.m.drop("ack_publish")
				}
				ready = ready[m:]
			}
		}
		if len(pending) > 0 { // entries not committed yet: look again shortly
			select {
			case <-tick.C:
			case <-n.ctx.Done():
				return
			}
		}
	}
}

// wantsAck queues an ack for a Quorum signal from another peer that just
// reached the journal. It never blocks the put hook: when the queue is
// full, the ack is dropped (counted) and the publisher's next ask brings
// it back.
func (n *Node) wantsAck(s *signalmesh.Signal, ref string, seq uint64) {
	if _, ok := s.Extensions[extQuorum]; !ok || ref == n.selfRef {
		return
	}
	n.wantsAckAt(place{Origin: ref, Seq: seq}, false)
}

// wantsAckAt queues p for the acker. An asked place (asked) is looked up
// once: a replica that lacks it does not keep looking (anyone can ask for
// anything), while a place from the put hook waits for its commit.
func (n *Node) wantsAckAt(p place, asked bool) {
	select {
	case n.ackQ <- ackWant{p, asked}:
	default:
		n.m.drop("ack_queue_full")
	}
}
