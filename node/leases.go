package node

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Leases travel two ways, like signals: each renewal (and a leave) is
// gossiped on the mesh's "leases" topic, the entries themselves, so that
// peers see it at once; and written to the subscription set's CRDT, so
// that a peer that missed the gossip, or joins later, converges. On a busy
// peer the CRDT's blocks wait behind the journal's for seconds: without
// the gossip a member's progress mark reached the others late, and a
// failover handled again what the dead member had handled meanwhile.
//
// A lease message is sealed by its sender (package seal); its validator
// refuses, counted ("lease_message"), one whose seal does not verify, that
// is too large, does not decode, or holds an entry that is malformed or
// not its signer's.
// With Config.Allow, a message from a peer outside the list is dropped
// and counted ("lease_not_member"), not refused: the member that relayed
// it is not to blame.

const (
	maxLeaseMsgBytes   = 1 << 20 // GossipSub's default message limit
	maxLeaseMsgEntries = 1024
)

type leaseMsg struct {
	Entries []leaseEntry `json:"e"`
	// Hello, when set, is the sender's incarnation (random, drawn when it
	// started): it has not heard yet who is live (its views wait, see
	// publishViews), or it answers the join of a peer it has not heard
	// since it started. A node connected to it renews soon (paced), even
	// if it heard the sender lately (a node that restarted within the
	// window of pace.go is asking, not answering), once per incarnation
	// per Lease/2.
	Hello string `json:"h,omitempty"`
	// Acks are the keys of group members' leaves (left entries) this node
	// received within the last lease: a node that closes waits for them
	// (Node.Close), so that its members' final marks are out before its
	// host closes.
	Acks []string `json:"a,omitempty"`
}

const (
	maxLeaseAcks   = 64
	maxLeaseAckLen = 2048
	maxHelloLen    = 32 // an incarnation: 13 characters
)

type leaseEntry struct {
	Key   string          `json:"k"`
	Value json.RawMessage `json:"v"`
}

// gossiped is an entry as a lease message carried it.
type gossiped struct {
	value   []byte
	expires time.Time
	lease   time.Duration
	at      time.Time // received
}

func (n *Node) joinLeases() error {
	topic := n.topicName("leases")
	if err := n.ps.RegisterTopicValidator(topic, n.validateLeases); err != nil {
		return err
	}
	var err error
	if n.leaseTopic, err = n.ps.Join(topic); err != nil {
		return err
	}
	if n.leaseSub, err = n.leaseTopic.Subscribe(pubsub.WithBufferSize(256)); err != nil {
		return err
	}
	n.leaseJoins, err = n.leaseTopic.EventHandler()
	return err
}

// watchLeaseJoins asks the registrar for a renewal at once when a peer
// joins the leases topic (a node started, a cut healed) and has sent no
// fresh lease message here within Lease/2, or when a peer it is connected
// to says Hello (once per incarnation per Lease/2; readLeases): the
// newcomer learns who is live without waiting for the next round. Joins
// are paced (see pace.go): a burst of joins gets one renewal.
func (n *Node) watchLeaseJoins() {
	defer n.wg.Done()
	n.wg.Add(1)
	go func() { // the event handler has no channel: a goroutine turns it into one
		defer n.wg.Done()
		for {
			ev, err := n.leaseJoins.NextPeerEvent(n.ctx)
			if err != nil {
				return
			}
			if ev.Type != pubsub.PeerJoin {
				continue
			}
			if n.renewed.recent(ev.Peer, time.Now(), n.p.Lease/2) {
				n.m.joinsUnanswered.Add(1)
				continue // its entry of this node is live (pace.go)
			}
			if !n.renewed.has(ev.Peer) {
				// Not heard since this node started: if this node
				// restarted, the peer heard its old process lately and
				// leaves the join unanswered; the answer asks for one.
				n.reg.helloNext.Store(true)
			}
			n.answerLeases()
		}
	}()
	pace := newJoinPacer()
	defer pace.stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.reg.answer:
			pace.join(len(n.leaseTopic.ListPeers()))
		case <-pace.C():
			pace.answered()
			select {
			case n.reg.renewNow <- struct{}{}:
			default: // one is due already
			}
		}
	}
}

// saysHello is the Hello of this node's next lease message: its
// incarnation until its views are published (at most Lease/2 after it
// started), and once after it answered the join of a peer it had not
// heard since it started; "" otherwise.
func (n *Node) saysHello(now time.Time) string {
	if !n.reg.heardLive.Load() && now.Before(n.reg.helloUntil) {
		return n.reg.incarnation
	}
	if n.reg.helloNext.Swap(false) {
		return n.reg.incarnation
	}
	return ""
}

// freshLease reports whether a lease message is fresh: one of its entries
// has more than half its lease to run. A renewal is; a copy replayed half
// a lease later is not, and does not pass for its author's presence.
func freshLease(entries []regEntry, now time.Time) bool {
	for _, e := range entries {
		lease, expires, _, _ := e.lease()
		if expires.After(now.Add(lease / 2)) {
			return true
		}
	}
	return false
}

// answerLeases asks watchLeaseJoins for a renewal soon (paced).
func (n *Node) answerLeases() {
	select {
	case n.reg.answer <- struct{}{}:
	default: // one is asked for already
	}
}

// heardAll reports whether every peer on the leases topic has a live
// entry in members (a read's result): the node knows who is live.
func (n *Node) heardAll(members map[string]*Member) bool {
	for _, p := range n.leaseTopic.ListPeers() {
		if members[p.String()] == nil {
			return false
		}
	}
	return true
}

// leaseMsgOf is a lease message as its validator decoded it.
type leaseMsgOf struct {
	entries []regEntry
	vals    []json.RawMessage
	acks    []string
	hello   string
}

func (n *Node) validateLeases(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	from, body, err := n.openSealed(m)
	if err != nil {
		n.m.reject("lease_message")
		return pubsub.ValidationReject
	}
	lm, err := decodeLeases(body, from)
	if err != nil {
		n.m.reject("lease_message")
		return pubsub.ValidationReject
	}
	m.ValidatorData = opened[leaseMsgOf]{from, lm}
	return pubsub.ValidationAccept
}

var (
	errTooLarge  = errors.New("node: lease message too large")
	errNotAuthor = errors.New("node: lease message entry of another peer")
)

// decodeLeases decodes a lease message of author and checks each entry.
func decodeLeases(b []byte, author peer.ID) (leaseMsgOf, error) {
	if len(b) > maxLeaseMsgBytes {
		return leaseMsgOf{}, errTooLarge
	}
	var msg leaseMsg
	if err := json.Unmarshal(b, &msg); err != nil {
		return leaseMsgOf{}, err
	}
	if len(msg.Entries) > maxLeaseMsgEntries || len(msg.Acks) > maxLeaseAcks || len(msg.Hello) > maxHelloLen {
		return leaseMsgOf{}, errTooLarge
	}
	for _, a := range msg.Acks {
		if len(a) > maxLeaseAckLen {
			return leaseMsgOf{}, errTooLarge
		}
	}
	out := make([]regEntry, 0, len(msg.Entries))
	vals := make([]json.RawMessage, 0, len(msg.Entries))
	for _, le := range msg.Entries {
		e, err := parseEntry(le.Key, le.Value)
		if err != nil {
			return leaseMsgOf{}, err
		}
		if e.owner != author {
			return leaseMsgOf{}, errNotAuthor
		}
		out, vals = append(out, e), append(vals, le.Value)
	}
	return leaseMsgOf{entries: out, vals: vals, acks: msg.Acks, hello: msg.Hello}, nil
}

// gossipLeases publishes entries (keys and values) of this node, in
// messages of at most half the limits.
func (n *Node) gossipLeases(keys []ds.Key, values [][]byte) {
	msg := leaseMsg{Acks: n.leaveAcks(time.Now()), Hello: n.saysHello(time.Now())}
	size := 0
	flush := func() {
		if len(msg.Entries) == 0 {
			return
		}
		b, _ := json.Marshal(msg)
		msg.Acks = nil // once per round
		if err := n.publishSealed(n.leaseTopic, b); err != nil && n.ctx.Err() == nil {
			n.log.Debug("node: gossip leases", "err", err)
		}
		msg.Entries, size = nil, 0
	}
	for i, k := range keys {
		e := leaseEntry{Key: k.String(), Value: values[i]}
		if size+len(e.Key)+len(e.Value) > maxLeaseMsgBytes/2 || len(msg.Entries) >= maxLeaseMsgEntries/2 {
			flush()
		}
		msg.Entries = append(msg.Entries, e)
		size += len(e.Key) + len(e.Value) + 16
	}
	flush()
}

// readLeases keeps the entries other peers gossip (the newest of each
// key, by its owner's expiry; at most MaxRegistry keys, the rest dropped
// and counted "registry_full") for the registrar, and wakes it for a new
// entry or a leave (renewals wait for its next read, every Lease/8).
func (n *Node) readLeases() {
	defer n.wg.Done()
	for {
		m, err := n.leaseSub.Next(n.ctx)
		if err != nil {
			return
		}
		o, ok := m.ValidatorData.(opened[leaseMsgOf])
		if !ok || o.from == n.self {
			continue
		}
		if len(n.cfg.Allow) > 0 && !slices.Contains(n.cfg.Allow, o.from) {
			// Dropped here, not refused by the validator: that would lower
			// the score of the member that relayed it (like acks).
			n.m.reject("lease_not_member")
			continue
		}
		entries, vals := o.v.entries, o.v.vals
		now := time.Now()
		if freshLease(entries, now) {
			n.renewed.add(o.from, now, n.p.Lease/2)
			// A Hello is answered for a peer connected to this node (its
			// joins are answered the same way), once per incarnation per
			// Lease/2: a starting node says Hello in every message for a
			// while, and is answered once. The pacer bounds what a node
			// that changes incarnations at will costs: a renewal per
			// joinGap. (helloed is keyed by peer and incarnation: a
			// peer.ID is a string.)
			inc := peer.ID(o.from.String() + "/" + o.v.hello)
			if o.v.hello != "" && n.host.Network().Connectedness(o.from) == network.Connected && !n.helloed.recent(inc, now, n.p.Lease/2) {
				n.helloed.add(inc, now, n.p.Lease/2)
				n.answerLeases()
			}
		}
		news := false  // a new entry or a leave: read the set now, not at the next tick
		leave := false // a group member's leave: acknowledge it at once
		n.reg.mu.Lock()
		for _, a := range o.v.acks {
			if w := n.reg.acked[a]; w != nil {
				w[o.from.String()] = true
			}
		}
		for i, e := range entries {
			lease, expires, left, _ := e.lease()
			old, ok := n.reg.gossiped[e.key]
			held := true // this node holds this value, or a newer one
			switch {
			case ok && !expires.After(old.expires):
			case !ok && len(n.reg.gossiped) >= n.p.MaxRegistry:
				n.m.drop("registry_full")
				held = false
			default:
				n.reg.gossiped[e.key] = gossiped{value: vals[i], expires: expires, lease: lease, at: now}
				news = news || !ok || left
			}
			if left && held && e.sub != nil && e.sub.Group != "" && n.heardLeave(leaveToken(e.key, expires), now) {
				leave = true
			}
		}
		n.reg.mu.Unlock()
		if leave && time.Since(n.reg.lastAckRenew.Load().(time.Time)) >= n.p.Lease/40 {
			// At most every Lease/40 (a peer whose members keep leaving
			// does not make every node renew on each leave); later leaves
			// go with the next renewal.
			n.reg.lastAckRenew.Store(now)
			select {
			case n.reg.renewNow <- struct{}{}:
			default:
			}
		}
		if news || leave {
			n.kickRegistry()
		}
	}
}

// leaveToken names one leave in acknowledgements: its key and its
// expiry, so that an acknowledgement of an earlier leave of the same
// member does not pass for this one.
func leaveToken(key string, expires time.Time) string {
	return key + "@" + strconv.FormatInt(expires.UnixNano(), 10)
}

// heardLeave notes a group member's leave this node received (its
// token), to acknowledge it with its next renewals (at most maxLeaseAcks,
// the oldest forgotten), and reports whether it is new. Called with
// reg.mu held.
func (n *Node) heardLeave(token string, now time.Time) bool {
	if n.reg.heard == nil {
		n.reg.heard = map[string]time.Time{}
	}
	if _, ok := n.reg.heard[token]; ok {
		return false
	}
	n.reg.heard[token] = now
	for len(n.reg.heard) > maxLeaseAcks {
		oldest := ""
		for k, at := range n.reg.heard {
			if oldest == "" || at.Before(n.reg.heard[oldest]) {
				oldest = k
			}
		}
		delete(n.reg.heard, oldest)
	}
	return true
}

// leaveAcks are the leaves heard within the last lease.
func (n *Node) leaveAcks(now time.Time) []string {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	var out []string
	for k, at := range n.reg.heard {
		if now.Sub(at) > n.p.Lease {
			delete(n.reg.heard, k)
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// merge gives, for each key, the newer of the CRDT's value and the
// gossiped one (by the owner's expiry); keys only gossiped are added. It
// forgets gossiped entries older than two of its leases. It runs on the
// registrar.
func (n *Node) mergeGossiped(crdtVals map[string][]byte, now time.Time) (vals map[string][]byte, gossipOnly map[string]bool) {
	gossipOnly = map[string]bool{}
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	for k, g := range n.reg.gossiped {
		if now.Sub(g.at) > 2*g.lease {
			delete(n.reg.gossiped, k)
			continue
		}
		cur, ok := crdtVals[k]
		if !ok {
			crdtVals[k], gossipOnly[k] = g.value, true
			continue
		}
		if e, err := parseEntry(k, cur); err == nil {
			if _, exp, _, _ := e.lease(); g.expires.After(exp) {
				crdtVals[k] = g.value
			}
		}
	}
	return crdtVals, gossipOnly
}
