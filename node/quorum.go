package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
)

// extQuorum marks a signal published with Quorum(k): replicas acknowledge
// it once it is durably in their journal.
const extQuorum = "meshquorum"

// ErrQuorum is wrapped by a *QuorumError.
var ErrQuorum = errors.New("node: quorum not reached")

// QuorumError is returned by a Quorum(k) publish whose context ended before
// k other peers acknowledged every signal. The signals are journaled
// locally all the same and still converge.
type QuorumError struct {
	Want  int
	Acked map[string]int // signal id -> peers that acknowledged it
	Err   error          // the context's error
}

func (e *QuorumError) Error() string {
	low := e.Want
	for _, n := range e.Acked {
		low = min(low, n)
	}
	return fmt.Sprintf("node: quorum of %d not reached (fewest acks: %d): %v", e.Want, low, e.Err)
}

func (e *QuorumError) Unwrap() []error { return []error{ErrQuorum, e.Err} }

// quorum tracks the acknowledgements Quorum publishes wait for. A leaf type
// with its own lock: acks arrive on the ack reader, waits happen in Publish.
type quorum struct {
	mu      sync.Mutex
	waiting map[string]*ackWaiter
}

type ackWaiter struct {
	need  int
	peers map[peer.ID]bool
	done  chan struct{} // closed when need peers acknowledged
}

func (q *quorum) register(ids []string, k int) []*ackWaiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	ws := make([]*ackWaiter, len(ids))
	for i, id := range ids {
		w := &ackWaiter{need: k, peers: map[peer.ID]bool{}, done: make(chan struct{})}
		q.waiting[id] = w
		ws[i] = w
	}
	return ws
}

func (q *quorum) forget(ids []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		delete(q.waiting, id)
	}
}

func (q *quorum) ack(from peer.ID, ids []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		w := q.waiting[id]
		if w == nil || w.peers[from] {
			continue
		}
		w.peers[from] = true
		if len(w.peers) == w.need {
			close(w.done)
		}
	}
}

func (q *quorum) counts(ids []string) map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(ids))
	for _, id := range ids {
		if w := q.waiting[id]; w != nil {
			out[id] = len(w.peers)
		}
	}
	return out
}

// awaitQuorum waits until k peers acknowledged every signal.
func (n *Node) awaitQuorum(ctx context.Context, ids []string, ws []*ackWaiter, k int) error {
	defer n.quorum.forget(ids)
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			return &QuorumError{Want: k, Acked: n.quorum.counts(ids), Err: ctx.Err()}
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
	return nil
}

// Acks travel on their own topic as a list of signal ids: a uvarint count,
// then per id a uvarint length and the id.
const maxAckIDs = 10000

func encodeAck(ids []string) []byte {
	b := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
	}
	return b
}

func decodeAck(b []byte) ([]string, error) {
	n, k := uvarint(b)
	if k <= 0 || n == 0 || n > maxAckIDs || n > uint64(len(b)) {
		return nil, errors.New("node: malformed ack")
	}
	b = b[k:]
	ids := make([]string, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := uvarint(b)
		if k <= 0 || l == 0 || l > uint64(len(b)-k) || l > 4096 {
			return nil, errors.New("node: malformed ack")
		}
		ids = append(ids, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return nil, errors.New("node: malformed ack")
	}
	return ids, nil
}

func (n *Node) validateAck(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	ids, err := decodeAck(msg.Data)
	if err != nil {
		n.m.reject("ack")
		return pubsub.ValidationReject
	}
	msg.ValidatorData = ids
	return pubsub.ValidationAccept
}

// readAcks records acknowledgements from other peers.
func (n *Node) readAcks() {
	defer n.wg.Done()
	for {
		msg, err := n.ackSub.Next(n.ctx)
		if err != nil {
			return
		}
		if ids, ok := msg.ValidatorData.([]string); ok && msg.GetFrom() != n.self {
			n.quorum.ack(msg.GetFrom(), ids)
		}
	}
}

// acker acknowledges Quorum signals that reached this replica's journal:
// it gathers ids for 5 ms, syncs the store (durable), then publishes them.
func (n *Node) acker() {
	defer n.wg.Done()
	for {
		var ids []string
		select {
		case <-n.ctx.Done():
			return
		case id := <-n.ackQ:
			ids = append(ids, id)
		}
		timer := time.NewTimer(5 * time.Millisecond)
	gather:
		for len(ids) < maxAckIDs {
			select {
			case id := <-n.ackQ:
				ids = append(ids, id)
			case <-timer.C:
				break gather
			case <-n.ctx.Done():
				timer.Stop()
				return
			}
		}
		timer.Stop()
		if err := n.repl.Sync(n.ctx, dsRoot); err != nil {
			n.log.Warn("node: sync before ack", "err", err)
			continue
		}
		if err := n.ackTopic.Publish(n.ctx, encodeAck(ids)); err != nil && n.ctx.Err() == nil {
			n.m.drop("ack_publish")
		}
	}
}

// wantsAck queues an ack for a Quorum signal from another peer that just
// reached the journal. It never blocks the put hook: when the queue is
// full, the ack is dropped (counted) and the publisher times out.
func (n *Node) wantsAck(s *signalmesh.Signal) {
	if _, ok := s.Extensions[extQuorum]; !ok {
		return
	}
	if origin, _ := s.Extensions[signalmesh.ExtPeer].(string); origin == n.self.String() {
		return
	}
	select {
	case n.ackQ <- s.ID:
	default:
		n.m.drop("ack_queue_full")
	}
}
