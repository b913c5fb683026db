package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/journal"
)

// messageID names a GossipSub message by a hash of its content: messages
// carry no author or sequence number (StrictNoSign), and a signal's wire
// form is canonical and includes its proof, so the same frame gossiped
// twice is one message, and no one can claim an honest message's id
// before it exists. (A single signal named by its id let an undecodable
// message carrying that id have the real one dropped as a duplicate:
// GossipSub marks a message seen before its validators run.)
func messageID(m *pb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:20])
}

// validate is the GossipSub validator of the signals topic: it decodes and
// bounds the signals, checks that they share one origin (meshpeer, Weak
// signals too: a node frames only its own signals; a relay may make frames
// of another origin's signals, see Trust in the package doc), that the origin is in
// Config.Allow when that is set (a message relayed by an allowed peer is no
// way in), and signed each signal (meshsig), and that a journaled signal's
// stamp parses. GossipSub messages carry no author of their own
// (StrictNoSign): the origin's signature is the signals'. Rejected messages
// are counted by reason and never forwarded; one that fails a check every
// honest relay makes (mixed origins, a bad signature) costs the peer that
// handed it over (node/score.go). One that does not decode, or whose proof
// is of a version this node does not know ("signature_version"), costs
// nothing: a relay of another version may read what this one cannot.
func (n *Node) validate(_ context.Context, fwd peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if msg.ReceivedFrom == n.self {
		return pubsub.ValidationAccept // our own, built from validated signals
	}
	k, stale, ends := n.staleFrame(msg.Data)
	if stale {
		n.m.deduped.Add(int64(k)) // delivered already (by the journal): neither decoded again nor passed on
		return pubsub.ValidationIgnore
	}
	sigs, wires, err := decodeFrameEnds(msg.Data, signalmesh.Limits{}, ends)
	if err != nil {
		n.m.reject("decode")
		return pubsub.ValidationReject
	}
	var from string
	var metas []*causal.Meta // read once here, not again in the loop
	for i, s := range sigs {
		origin, _ := s.Extensions[signalmesh.ExtPeer].(string)
		if i == 0 {
			from = origin
		}
		if origin != from || origin == "" {
			n.m.reject("origin")
			n.penalties.add(fwd)
			return pubsub.ValidationReject
		}
		if _, journaled := s.Extensions[signalmesh.ExtCausal]; journaled {
			m, err := journal.MetaOf(s)
			if err != nil {
				n.m.reject("stamp")
				return pubsub.ValidationReject
			}
			if metas == nil {
				metas = make([]*causal.Meta, len(sigs))
			}
			metas[i] = &m
		}
		if !testNoVerify {
			if err := n.ver.verify(s, wires[i]); errors.Is(err, ErrNotAllowed) {
				n.m.reject("origin_not_allowed")
				return pubsub.ValidationIgnore // policy: the relay may have another list
			} else if errors.Is(err, errProofVersion) {
				n.m.reject("signature_version")
				return pubsub.ValidationReject // a newer relay may know it: no penalty
			} else if err != nil {
				n.m.reject("signature")
				n.penalties.add(fwd)
				return pubsub.ValidationReject
			}
		}
	}
	for i, m := range metas {
		if m != nil && len(wires[i]) <= maxVettedValue {
			// Kept for its journal entry (vetted): a copy, not a slice of
			// the frame, which it would keep in memory.
			n.vetted.put(journal.SignalKey(m.Origin, m.Seq).String(), bytes.Clone(wires[i]), sigs[i], m)
		}
	}
	msg.ValidatorData = signalMsg{sigs, metas}
	return pubsub.ValidationAccept
}

// signalMsg is a signal message's ValidatorData: its signals and, for each
// with a causal stamp, the meta validate read (nil when metas is).
type signalMsg struct {
	sigs  []*signalmesh.Signal
	metas []*causal.Meta
}

// readGossip feeds signals from other peers to the loop. Our own
// publications come back through the CRDT put hook instead.
func (n *Node) readGossip() {
	defer n.wg.Done()
	for {
		msg, err := n.sub.Next(n.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == n.self {
			continue
		}
		g, _ := msg.ValidatorData.(signalMsg)
		for i, s := range g.sigs {
			in := inbound{s: s, via: viaGossip}
			if g.metas != nil {
				in.meta = g.metas[i]
			}
			if !n.send(in) {
				return
			}
		}
	}
}

// testNoVerify, when set (tests only), turns signing, signature checks and
// journal checks off: the hostile tests run with it show the attacks they
// stop, and BenchmarkDurablePublish what signing costs.
var testNoVerify bool

// putHook receives every journal entry that arrives in the CRDT store, local
// or remote. It blocks while the loop's inbox is full (back-pressure on DAG
// sync), and gives up only when the node closes.
func (n *Node) putHook(key ds.Key, value []byte) {
	ref, seq, ok := journal.ParseSignalKey(key)
	if !ok {
		return // an index entry
	}
	// Remote entries were checked before go-ds-crdt merged their block
	// (checkEntry), which hands over what it decoded; others (this node's
	// own, or ones it could not keep) are decoded and checked here (which
	// costs a hash: the verifier knows the wire forms it checked or signed).
	s, vm, checked := n.vetted.take(key.String(), value)
	if !checked {
		var err error
		if s, err = signalmesh.DecodeBinary(value, signalmesh.Limits{}); err != nil {
			n.m.reject("journal_entry")
			return
		}
	}
	var m causal.Meta
	if vm != nil {
		m = *vm // read by the gossip validator from these bytes
	} else {
		var err error
		if m, err = journal.MetaOf(s); err != nil {
			n.m.reject("journal_entry")
			return
		}
	}
	if m.Origin != ref || m.Seq != seq {
		n.m.reject("journal_entry")
		return
	}
	if !testNoVerify && !checked {
		if err := n.ver.verify(s, value); errors.Is(err, ErrNotAllowed) {
			n.m.reject("journal_not_allowed")
			return
		} else if err != nil {
			n.m.reject("journal_signature")
			return
		}
	}
	n.m.journaled.Add(1)
	n.seen.add(s.ID)
	n.tops.note(ref, seq)
	n.wantsAck(s, ref, seq)
	if n.refusing.Load() {
		// The core has no room (a large catch-up): it would refuse this
		// one, and read it from the journal when its turn comes. Tell it
		// the signal exists; spare the rest. It is indexed all the same,
		// in batches (the core asks the index whether a cause it waits
		// for is journaled: then it is on its way and the effect waits).
		n.indexLater(m)
		n.send(inbound{known: &causal.Ref{Origin: ref, Seq: seq}})
		return
	}
	n.indexLater(m)
	n.send(inbound{s: s, via: viaJournal, meta: &m})
}

// indexLater queues the index entry of a journaled signal, written with
// the others in one batch when 1,024 are queued, at the loop's next tick,
// or at Close: one store write per entry would slow a heal or a large
// catch-up, whose entries arrive by the ten thousand. Until its batch is
// committed a queued entry is read through idxView, so the core and
// Journal.Get see it at once.
func (n *Node) indexLater(m causal.Meta) {
	if n.memIdx != nil {
		n.memIdx.Add(m) // read at once: nothing to queue
		return
	}
	es := journal.IndexEntries(m)
	n.idxMu.Lock()
	n.idxPending = append(n.idxPending, es...)
	if n.idxShown == nil {
		n.idxShown = map[string][]shownEntry{}
	}
	for _, e := range es {
		n.idxQueued++
		dir := idxDir(e.Key)
		n.idxShown[dir] = append(n.idxShown[dir], shownEntry{e, n.idxQueued})
	}
	full := len(n.idxPending) >= 1024
	n.idxMu.Unlock()
	if full {
		n.flushIndex()
	}
}

// shownEntry is a queued index entry and its place in the queue (the
// idxQueued count when it was queued).
type shownEntry struct {
	journal.Entry
	seq uint64
}

// flushIndex writes the queued index entries in one batch, straight to the
// store under the index's prefix (the namespace's key transform cleaned
// and copied every key again: most of the index's cost in a heal).
func (n *Node) flushIndex() {
	n.idxMu.Lock()
	pend := n.idxPending
	n.idxPending = nil
	from, upto := n.idxFlushed, n.idxQueued // pend holds the entries queued in (from, upto]
	n.idxFlushed = upto
	n.idxMu.Unlock()
	if len(pend) == 0 {
		return
	}
	ctx := context.WithoutCancel(n.ctx)
	b, err := n.store.Batch(ctx)
	if err == nil {
		for _, e := range pend {
			if err = b.Put(ctx, ds.RawKey(n.indexPrefix+e.Key.String()), e.Value); err != nil {
				break
			}
		}
		if err == nil {
			err = b.Commit(ctx)
		}
	}
	if err != nil {
		// As when a single write failed: the index is incomplete until the
		// next start rebuilds it (indexBad), and these entries are not
		// kept in memory for the rest of the run.
		n.log.Error("node: write the journal index", "err", err)
		n.m.drop("index_write")
		n.indexBad.Store(true)
	}
	// Each directory's entries of this batch leave the queued view; one
	// queued again since (a later batch) stays until that batch is written.
	// A directory's entries are in queue order (appended under idxMu as
	// queued), so this batch's are one run, found by binary search: a
	// directory that still holds another batch's entries (one cause's
	// effects, while the put hooks queue the next batch) is not scanned
	// again for each of this batch's entries in it.
	n.idxMu.Lock()
	for _, e := range pend {
		dir := idxDir(e.Key)
		es, ok := n.idxShown[dir]
		if !ok {
			continue // done at an earlier entry of the same directory
		}
		i, _ := slices.BinarySearchFunc(es, from, func(x shownEntry, s uint64) int { return cmp.Compare(x.seq, s+1) })
		j, _ := slices.BinarySearchFunc(es[i:], upto, func(x shownEntry, s uint64) int { return cmp.Compare(x.seq, s+1) })
		if j == 0 {
			continue // done at an earlier entry of the same directory
		}
		if es = slices.Delete(es, i, i+j); len(es) == 0 {
			delete(n.idxShown, dir)
		} else {
			n.idxShown[dir] = es
		}
	}
	n.idxMu.Unlock()
}

// idxDir is an index key's directory: the id's entries (Key.Parent
// without its cost).
func idxDir(k ds.Key) string {
	s := k.String()
	return s[:max(0, strings.LastIndexByte(s, '/'))]
}

// idxView is the journal's index as the node reads it: the store, and the
// entries queued by indexLater that are not committed yet. The journal
// reads it only through Query, by one id's directory (Journal.Copies,
// Journal.EffectPlaces); Get and Has read the store alone.
type idxView struct{ n *Node }

func (v idxView) Get(ctx context.Context, k ds.Key) ([]byte, error) { return v.n.index.Get(ctx, k) }
func (v idxView) Has(ctx context.Context, k ds.Key) (bool, error)   { return v.n.index.Has(ctx, k) }
func (v idxView) GetSize(ctx context.Context, k ds.Key) (int, error) {
	return v.n.index.GetSize(ctx, k)
}

// Query adds to the store's results the queued entries directly under
// q.Prefix (the journal asks for one id's entries: its directory).
func (v idxView) Query(ctx context.Context, q query.Query) (query.Results, error) {
	v.n.idxMu.Lock()
	var queued []journal.Entry
	for _, e := range v.n.idxShown[strings.TrimSuffix(q.Prefix, "/")] {
		queued = append(queued, e.Entry)
	}
	v.n.idxMu.Unlock()
	res, err := v.n.index.Query(ctx, q)
	if err != nil || len(queued) == 0 {
		return res, err
	}
	got, err := res.Rest()
	if err != nil {
		res.Close()
		return nil, err
	}
	have := make(map[string]bool, len(got))
	for _, e := range got {
		have[e.Key] = true
	}
	for _, e := range queued { // an entry queued twice (the put hook ran again for its signal) is read once
		if k := e.Key.String(); !have[k] {
			have[k] = true
			got = append(got, query.Entry{Key: k, Value: e.Value, Size: len(e.Value)})
		}
	}
	return query.ResultsWithEntries(q, got), nil
}

// errEntryKey: a journal entry whose key is not the place (origin ref,
// sequence) of the signal it holds.
var errEntryKey = errors.New("node: journal entry not at its signal's place")

// checkEntry vets an entry of a journal delta from another replica before
// go-ds-crdt merges it (see crdt.Params.CheckEntry): its key is a signal's
// place, and the value is that signal, signed by its origin, the peer
// whose ref the key names. With crdt.Params.Immutable, nobody can delete
// or rewrite an entry either.
func (n *Node) checkEntry(key string, value []byte) error {
	if n.vetted.has(key, value) {
		return nil // the same bytes came by gossip, decoded and verified there, at this key (their place)
	}
	k := ds.NewKey(key)
	ref, seq, ok := journal.ParseSignalKey(k)
	if !ok {
		return fmt.Errorf("%w: key %q", errEntryKey, key)
	}
	s, err := signalmesh.DecodeBinary(value, signalmesh.Limits{})
	if err != nil {
		return fmt.Errorf("node: journal entry %s: %w", key, err)
	}
	if r, q := journal.Place(s); r != ref || q != seq {
		return fmt.Errorf("%w: %s holds %s:%d", errEntryKey, key, r, q)
	}
	if err := n.ver.verify(s, value); err != nil {
		return err
	}
	n.vetted.put(k.String(), value, s, nil)
	return nil
}

// refusedBlock counts a journal block the checks refused, by reason.
func (n *Node) refusedBlock(e *crdt.RefusedError) {
	reason := "journal_block"
	switch {
	case errors.Is(e, crdt.ErrTombstone):
		reason = "journal_tombstone"
	case errors.Is(e, crdt.ErrOverwrite):
		reason = "journal_overwrite"
	case errors.Is(e, ErrNotAllowed):
		reason = "journal_not_allowed"
	case errors.Is(e, ErrSignature):
		reason = "journal_signature"
	case errors.Is(e, errEntryKey):
		reason = "journal_key"
	case errors.Is(e, signalmesh.ErrMalformed), errors.Is(e, signalmesh.ErrTooLarge):
		reason = "journal_entry"
	}
	n.m.reject(reason)
	n.log.Warn("node: refused a journal block from another replica", "reason", reason, "err", e)
}

// gater implements the Allow list and chains to Config.Gater.
type gater struct {
	allow []peer.ID
	next  connmgr.ConnectionGater
}

func (g *gater) allowed(p peer.ID) bool {
	if len(g.allow) == 0 {
		return true
	}
	for _, a := range g.allow {
		if a == p {
			return true
		}
	}
	return false
}

func (g *gater) InterceptPeerDial(p peer.ID) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptPeerDial(p))
}

func (g *gater) InterceptAddrDial(p peer.ID, a multiaddr.Multiaddr) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptAddrDial(p, a))
}

func (g *gater) InterceptAccept(a network.ConnMultiaddrs) bool {
	return g.next == nil || g.next.InterceptAccept(a)
}

func (g *gater) InterceptSecured(d network.Direction, p peer.ID, a network.ConnMultiaddrs) bool {
	return g.allowed(p) && (g.next == nil || g.next.InterceptSecured(d, p, a))
}

func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if g.next == nil {
		return true, 0
	}
	return g.next.InterceptUpgraded(c)
}

// tracer counts what GossipSub itself drops or rejects: messages with an
// author or a signature (StrictNoSign), full queues. Rejections by our own validator are counted
// there, with a finer reason.
type tracer struct {
	m       *metrics
	topic   string   // the signals topic, whose mesh the node counts
	writers *writers // outbound streams closed and not opened again (relink.go)
}

var _ pubsub.RawTracer = tracer{}

func (t tracer) RejectMessage(_ *pubsub.Message, reason string) {
	// Failed and ignored validations are counted by validate, by reason
	// (an ignored stale frame is no rejection: its signals count as
	// deduplicated).
	if reason != pubsub.RejectValidationFailed && reason != pubsub.RejectValidationIgnored {
		t.m.reject("gossip: " + reason)
	}
}
func (t tracer) DropRPC(*pubsub.RPC, peer.ID)                 { t.m.drop("gossip_rpc_queue_full") }
func (t tracer) UndeliverableMessage(*pubsub.Message)         { t.m.drop("gossip_subscriber_full") }
func (t tracer) OnNewOutboundStream(p peer.ID, _ protocol.ID) { t.writers.opened(p) }
func (t tracer) OnClosedOutboundStream(p peer.ID) { // the peer is gone, or GossipSub opens another stream
	t.m.meshPeer(p, false)
	t.writers.closed(p, time.Now())
}
func (tracer) Join(string)  {}
func (tracer) Leave(string) {}
func (t tracer) Graft(p peer.ID, topic string) {
	if topic == t.topic {
		t.m.meshPeer(p, true)
	}
}
func (t tracer) Prune(p peer.ID, topic string) {
	if topic == t.topic {
		t.m.meshPeer(p, false)
	}
}
func (tracer) ValidateMessage(*pubsub.Message)  {}
func (tracer) DeliverMessage(*pubsub.Message)   {}
func (tracer) DuplicateMessage(*pubsub.Message) {}
func (tracer) ThrottlePeer(peer.ID)             {}
func (t tracer) RecvRPC(*pubsub.RPC)            { t.m.rpcsIn.Add(1) }
func (t tracer) SendRPC(*pubsub.RPC, peer.ID)   { t.m.rpcsOut.Add(1) }
