package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/router"
	"github.com/signalmesh/signalmesh/vclock"
)

// The subscription set is a registry in a second go-ds-crdt store, under
// two kinds of keys:
//
//	/peer/<peer id>          a node's record: its region and lease
//	/sub/<peer id>/<id>      a subscription: pattern, group, strategy,
//	                         region, lease, and a group member's progress
//
// Each node writes only its own entries, renews them every Lease/3 in one
// delta, and deletes any entry not renewed for two leases (as it sees
// them: renewals are timed by the reader's clock, so owners' clocks need
// not agree). A malformed entry is counted (Status.Rejected
// "registry_entry") and deleted; it never reaches a view.

const (
	regPeer       = "/peer/"
	regSub        = "/sub/"
	maxEntryBytes = 256 << 10 // a mark names each origin a member saw: about 4,500 origins (From and Mark)
	maxLease      = time.Hour
	maxNameBytes  = 1024 // a subscription's name (WithName) or id
)

// SubscriptionInfo is one entry of the mesh-wide subscription set.
type SubscriptionInfo struct {
	Peer     string `json:"peer"`
	ID       string `json:"id"` // the name of a persistent subscription, else a generated id
	Pattern  string `json:"pattern"`
	Name     string `json:"name,omitempty"` // set for persistent subscriptions
	Priority int    `json:"priority,omitempty"`
	// Group is the consumer group the subscription is a member of, and
	// Strategy the group's (Strategy.String).
	Group    string `json:"group,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Region   string `json:"region,omitempty"` // its node's Config.Region
	// Lease is how long the entry stays live unrenewed; Expires when it
	// ends, by its owner's clock.
	Lease   time.Duration `json:"lease"`
	Expires time.Time     `json:"expires"`
	// From: a group member takes signals its From does not cover (what
	// its node had delivered when it joined). Mark: it has handled its
	// share of the signals Mark covers (renewed with the lease; final
	// when it left).
	From vclock.Clock `json:"from,omitzero"`
	Mark vclock.Clock `json:"mark,omitzero"`
	Left bool         `json:"left,omitempty"` // it left cleanly: Mark is final
	// Took: the places of the signals this member handled for members
	// of its group that had departed (member id, "<peer>/<id>", -> places;
	// the last 16 members), so that one that comes back passes them over.
	Took map[string]Places `json:"took,omitempty"`
}

// memberID names a subscription in a group's assignment.
func (i SubscriptionInfo) memberID() string { return i.Peer + "/" + i.ID }

// peerRecord is a node's entry.
type peerRecord struct {
	Peer    string        `json:"peer"`
	Region  string        `json:"region,omitempty"`
	Lease   time.Duration `json:"lease"`
	Expires time.Time     `json:"expires"`
}

// registry is the node's view of the subscription set. The registrar
// goroutine reads the set and writes the fields under mu; API calls read
// them.
type registry struct {
	kick     chan struct{} // buffer 1: read the set again soon (a delta arrived)
	renewNow chan struct{} // buffer 1: renew at once (a peer joined the leases topic)
	answer   chan struct{} // buffer 1: a join or a Hello to answer, paced (watchLeaseJoins)
	// heardLive: views are published (ready below); until then, and
	// helloUntil at most, this node's lease messages say Hello; helloNext:
	// the next one does (saysHello).
	heardLive   atomic.Bool
	helloNext   atomic.Bool
	helloUntil  time.Time // set before the node's goroutines start
	incarnation string    // random, drawn at the start: this node's Hello

	// writeMu orders a renewal and a leave of this node's entries: a
	// renewal that read a member as held before its leave must not write
	// its live entry (an older mark) after the left one, in the gossip or
	// in the CRDT, where the later write wins.
	writeMu sync.Mutex

	mu       sync.Mutex
	local    map[string]*Subscription // this node's replicated subscriptions, by id
	remote   []SubscriptionInfo       // other peers' live subscriptions at the last read
	members  map[string]*Member       // other peers with a live entry, by peer id
	watchers map[*memberWatch]struct{}
	full     bool                     // the last read found more than MaxRegistry entries
	departed map[string]departedEntry // group member id -> its last mark, kept 10 leases
	gossiped map[string]gossiped      // entries lease messages carried, by key (readLeases)
	heard    map[string]time.Time     // keys of group members' leaves received, to acknowledge (readLeases)
	// this node's members' leaves in Close: key -> its leave's token
	// ("" until withdrawSub gossiped it), and token -> the peers that
	// acknowledged it (readLeases)
	leaving      map[string]string
	acked        map[string]map[string]bool
	lastAckRenew atomic.Value // time.Time: the last renewal a leave asked for (readLeases)

	// owned by the registrar
	seen  map[string]*seenEntry
	views map[string]*groupView            // by group, as last published
	sigs  map[string]string                // by group, the published view's signature
	gone  map[string]map[string]goneMember // by group, members departed lately
	// written is when each of this node's entries was last written to
	// the CRDT (renew: the registrar only).
	written map[string]time.Time
	started time.Time // the registrar's start: views wait for a round of renewals
	ready   bool      // views are published (publishViews)
}

type seenEntry struct {
	sum     uint64    // hash of the value
	changed time.Time // when this replica saw it change (a renewal)
	bad     bool
	e       regEntry // parsed, when not bad
}

type departedEntry struct {
	mark vclock.Clock
	at   time.Time
}

func (n *Node) startSubscriptionSet() error {
	n.reg = &registry{kick: make(chan struct{}, 1), renewNow: make(chan struct{}, 1), answer: make(chan struct{}, 1), local: map[string]*Subscription{},
		members: map[string]*Member{}, watchers: map[*memberWatch]struct{}{},
		seen: map[string]*seenEntry{}, views: map[string]*groupView{}, sigs: map[string]string{},
		gone: map[string]map[string]goneMember{}, written: map[string]time.Time{},
		departed: map[string]departedEntry{}, gossiped: map[string]gossiped{}}
	n.reg.lastAckRenew.Store(time.Time{})
	n.reg.helloUntil = time.Now().Add(n.p.Lease / 2)
	n.reg.incarnation = strconv.FormatUint(rand.Uint64(), 36)
	if err := n.joinLeases(); err != nil {
		return err
	}
	p := crdt.Params{
		Namespace:           ds.NewKey("/mesh/" + n.cfg.Mesh + "/subscriptions"),
		Topic:               n.topicName("subscriptions"),
		RebroadcastInterval: n.p.Rebroadcast,
		Has:                 n.dag.HasBlock,
		Self:                n.self,
		Key:                 n.key,
		OnReject:            n.m.reject,
		Logger:              n.log,
		Host:                n.host,
		PutHook: func(ds.Key, []byte) {
			select {
			case n.reg.kick <- struct{}{}:
			default: // a read is due already
			}
		},
	}
	if len(n.cfg.Allow) > 0 { // like the journal's: only members announce heads
		p.Member = (&gater{allow: append([]peer.ID{n.self}, n.cfg.Allow...)}).allowed
	}
	var err error
	st := n.store
	if n.subStore != nil {
		st = n.subStore
	}
	n.subset, err = crdt.Open(st, n.dag, n.ps, p)
	return err
}

func subKey(peerID, id string) ds.Key { return ds.NewKey(regSub + peerID + "/" + id) }

// entry is what s announces now: its lease from now, its progress.
func (n *Node) entry(s *Subscription, now time.Time) SubscriptionInfo {
	info := s.info
	info.Lease, info.Expires = n.p.Lease, now.Add(n.p.Lease)
	if s.group != nil {
		info.Mark = *s.group.mark.Load()
		if info.Took = s.group.tookSnapshot(); info.Took != nil {
			if b, _ := json.Marshal(info); len(b) > maxEntryBytes || checkTook(info.Took) != nil {
				info.Took = nil // it only saves duplicates: the entry must stay valid
			}
		}
	}
	return info
}

// announceSub adds a subscription to the mesh-wide set.
func (n *Node) announceSub(s *Subscription) error {
	n.reg.writeMu.Lock() // deleteIfUnchanged: no own write between its Get and its Delete
	defer n.reg.writeMu.Unlock()
	n.reg.mu.Lock()
	n.reg.local[s.info.ID] = s // before the put: the registrar deletes own entries it does not know
	n.reg.mu.Unlock()
	b, _ := json.Marshal(n.entry(s, time.Now()))
	key := subKey(s.info.Peer, s.info.ID)
	n.gossipLeases([]ds.Key{key}, [][]byte{b}) // the other members count it in at once
	if err := n.subset.Put(context.WithoutCancel(n.ctx), key, b); err != nil {
		n.reg.mu.Lock()
		delete(n.reg.local, s.info.ID)
		n.reg.mu.Unlock()
		return err
	}
	n.kickRegistry()
	return nil
}

// withdrawSub removes s from the set; a group member leaves its final
// mark instead (the entry is deleted leftLeases later), so that the members
// that take its share over know exactly what it handled. The leave is
// gossiped too (the others see it at once) before the node forgets s.
func (n *Node) withdrawSub(s *Subscription) error {
	n.reg.writeMu.Lock()
	defer n.reg.writeMu.Unlock()
	s.leaving.Store(true) // renewals leave it alone
	info := n.entry(s, time.Now())
	info.Left = true
	b, _ := json.Marshal(info)
	key := subKey(s.info.Peer, s.info.ID)
	n.reg.mu.Lock()
	if _, ok := n.reg.leaving[key.String()]; ok { // Node.Close waits for its acknowledgements
		t := leaveToken(key.String(), info.Expires)
		n.reg.leaving[key.String()], n.reg.acked[t] = t, map[string]bool{}
	}
	n.reg.mu.Unlock()
	var err error
	if n.ctx.Err() == nil { // closing: the entry expires
		n.gossipLeases([]ds.Key{key}, [][]byte{b})
		if s.group == nil {
			err = n.subset.Delete(n.ctx, key)
		} else {
			err = n.subset.Put(n.ctx, key, b)
		}
	}
	n.reg.mu.Lock()
	delete(n.reg.local, s.info.ID)
	if s.group != nil { // the other local members take over after its final mark
		n.reg.departed[info.memberID()] = departedEntry{mark: n.reg.departed[info.memberID()].mark.Merge(info.Mark), at: time.Now()}
	}
	n.reg.mu.Unlock()
	n.kickRegistry()
	return err
}

func (n *Node) kickRegistry() {
	select {
	case n.reg.kick <- struct{}{}:
	default:
	}
}

// registrar renews this node's entries every Lease/3 and reads the set
// every Lease/8 and when a delta or a lease message arrives (at most once
// every Lease/40: in a large mesh renewals arrive all the time): it
// publishes the groups' views, the members and their events, and deletes
// expired and malformed entries.
func (n *Node) registrar() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.p.Lease/8, 10*time.Millisecond))
	defer t.Stop()
	warm := time.NewTicker(max(n.p.Lease/40, 10*time.Millisecond)) // reads while views wait (publishViews)
	defer warm.Stop()
	gap := max(n.p.Lease/40, 10*time.Millisecond)
	n.reg.started = time.Now()
	var renewed, read time.Time
	var later <-chan time.Time // a kick came too soon after the last read
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-later:
			later = nil
		case <-warm.C:
			if n.reg.ready {
				warm.Stop()
				continue
			}
		case <-n.reg.renewNow:
			renewed = time.Time{}
		case <-n.reg.kick:
			if d := time.Since(read); d < gap {
				if later == nil {
					later = time.After(gap - d)
				}
				continue
			}
		}
		now := time.Now()
		read = now
		if now.Sub(renewed) >= n.p.Lease/3 {
			if err := n.renew(now); err != nil && n.ctx.Err() == nil {
				n.log.Warn("node: renew subscription leases", "err", err)
			}
			renewed = now
		}
		if err := n.readRegistry(now); err != nil && n.ctx.Err() == nil {
			n.log.Warn("node: read the subscription set", "err", err)
		}
	}
}

// checkpointLeases is how many leases apart a node writes an unchanged
// entry to the set's CRDT: renewals travel by gossip (liveness), the CRDT
// keeps what a node that missed them or joins later reads (every entry,
// each leave, marks at most this old). Each CRDT write is a delta that
// every replica fetches and keeps: writing each renewal made the set's
// DAG grow by a delta per node every Lease/3, fetched by every node.
const checkpointLeases = 10

// renew gossips this node's record and its subscriptions' entries, and
// writes those not written for checkpointLeases leases to the CRDT, in
// one delta.
func (n *Node) renew(now time.Time) error {
	n.reg.writeMu.Lock()
	defer n.reg.writeMu.Unlock()
	n.reg.mu.Lock()
	local := make([]*Subscription, 0, len(n.reg.local))
	for _, s := range n.reg.local {
		if !s.leaving.Load() {
			local = append(local, s)
		}
	}
	n.reg.mu.Unlock()
	rec, _ := json.Marshal(peerRecord{Peer: n.self.String(), Region: n.cfg.Region, Lease: n.p.Lease, Expires: now.Add(n.p.Lease)})
	keys, vals := []ds.Key{ds.NewKey(regPeer + n.self.String())}, [][]byte{rec}
	for _, s := range local {
		v, _ := json.Marshal(n.entry(s, now))
		keys, vals = append(keys, subKey(s.info.Peer, s.info.ID)), append(vals, v)
	}
	n.gossipLeases(keys, vals)
	n.m.leaseRenewals.Add(1)
	var b ds.Batch
	size := 0
	for i, k := range keys {
		n.m.leaseGossip.Add(int64(len(vals[i])))
		if now.Sub(n.reg.written[k.String()]) < checkpointLeases*n.p.Lease {
			continue
		}
		if b == nil {
			var err error
			if b, err = n.subset.Batch(n.ctx); err != nil {
				return err
			}
		}
		if err := b.Put(n.ctx, k, vals[i]); err != nil {
			return err
		}
		n.reg.written[k.String()] = now
		size += len(vals[i])
	}
	for k, at := range n.reg.written { // forget withdrawn ones
		if now.Sub(at) > 2*checkpointLeases*n.p.Lease {
			delete(n.reg.written, k)
		}
	}
	if b == nil {
		return nil
	}
	if err := b.Commit(n.ctx); err != nil {
		return err
	}
	n.m.leaseBytes.Add(int64(size))
	return nil
}

// regEntry is one parsed entry of the set.
type regEntry struct {
	key   string
	owner peer.ID
	rec   *peerRecord
	sub   *SubscriptionInfo
	live  bool
}

// readRegistry reads the whole set (up to MaxRegistry entries) and
// publishes what it found.
func (n *Node) readRegistry(now time.Time) error {
	res, err := n.subset.Query(n.ctx, query.Query{})
	if err != nil {
		return err
	}
	vals := map[string][]byte{}
	full := false
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		if len(vals) >= n.p.MaxRegistry {
			full = true
			continue
		}
		vals[r.Key] = r.Value
	}
	res.Close()
	read := maps.Clone(vals) // what the set held at this read (the merge below overwrites)
	vals, gossipOnly := n.mergeGossiped(vals, now)
	var entries []regEntry
	var stale []ds.Key
	keys := map[string]bool{}
	for k, v := range vals {
		keys[k] = true
		e, del := n.noteEntry(k, v, now)
		if del && !gossipOnly[k] {
			stale = append(stale, ds.NewKey(k))
		}
		if e.rec != nil || e.sub != nil {
			entries = append(entries, e)
		}
	}
	for k := range n.reg.seen {
		if !keys[k] && !full {
			delete(n.reg.seen, k)
		}
	}
	for _, k := range stale {
		if err := n.deleteIfUnchanged(k, read[k.String()]); err != nil {
			return err
		}
	}
	n.publishRegistry(entries, full, now)
	return nil
}

// deleteIfUnchanged deletes k from the set if it still holds the value
// read, the one the registrar judged stale. A write may have overtaken the
// read meanwhile (a member's left entry, put while the read was on its way,
// or a renewal's checkpoint), and a delete removes whatever value the key
// holds: deleting on the old judgement took the newer entry with it (a
// left entry gone 0.9 s after its leave, 3 leases into its 10, in a loaded
// run of TestGroupLeftEntryOutlivesALaggingRead). This node writes its own
// entries under writeMu, so for them the check is exact; a remote write
// that lands between the check and the delete is the window left, and the
// next read judges the key again.
func (n *Node) deleteIfUnchanged(k ds.Key, judged []byte) error {
	n.reg.writeMu.Lock()
	defer n.reg.writeMu.Unlock()
	cur, err := n.subset.Get(n.ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, judged) {
		return nil
	}
	return n.subset.Delete(n.ctx, k)
}

// leftLeases is how many leases a group member's left entry (its final
// progress mark) stays in the set before a peer deletes it. At one lease,
// a replica whose copy of the set lagged more than that (a loaded
// machine) could fetch the put and the delete together and never read the
// final mark: it took the member's share over from an older one and
// handled again what the member had handled (16 signals in a CI run of
// TestGroupCleanLeaveHandsOff). It matches how long the departed marks
// are kept (registry.departed).
const leftLeases = 10

// noteEntry parses one entry, notes a renewal, and says whether it is to
// be deleted (expired, malformed, or this node's and no longer held).
func (n *Node) noteEntry(key string, val []byte, now time.Time) (regEntry, bool) {
	h := fnv.New64a()
	h.Write(val)
	sum := h.Sum64()
	st := n.reg.seen[key]
	if st == nil || st.sum != sum {
		st = &seenEntry{sum: sum, changed: now}
		n.reg.seen[key] = st
		e, err := parseEntry(key, val)
		if err != nil {
			st.bad = true
			n.m.reject("registry_entry")
			n.log.Debug("node: malformed subscription set entry", "key", key, "err", err)
			return regEntry{}, true
		}
		st.e = e
	}
	if st.bad {
		return regEntry{}, true
	}
	e := st.e
	lease, expires, left, owner := e.lease()
	unrenewed := now.Sub(st.changed)
	// Renewals come through the set's DAG, behind the journal's blocks on
	// a busy peer: an owner this node is connected to is given four leases
	// before it is taken for dead (a dead process drops its connections).
	grace := lease
	if n.host.Network().Connectedness(e.owner) == network.Connected {
		grace = 4 * lease
	}
	e.live = !left && unrenewed <= grace && now.Before(expires.Add(grace))
	if owner == n.self.String() {
		if e.sub != nil {
			n.reg.mu.Lock()
			_, held := n.reg.local[e.sub.ID]
			n.reg.mu.Unlock()
			e.live = held
			// a left entry stays leftLeases, for others to read its final mark
			return e, !held && !(left && unrenewed <= leftLeases*lease)
		}
		return e, false
	}
	if left {
		return e, unrenewed > leftLeases*lease
	}
	gone := !e.live && unrenewed > 2*lease && now.After(expires.Add(lease))
	return e, gone
}

func (e regEntry) lease() (lease time.Duration, expires time.Time, left bool, owner string) {
	if e.rec != nil {
		return e.rec.Lease, e.rec.Expires, false, e.rec.Peer
	}
	return e.sub.Lease, e.sub.Expires, e.sub.Left, e.sub.Peer
}

// parseEntry decodes and checks an entry of the set.
func parseEntry(key string, val []byte) (regEntry, error) {
	e := regEntry{key: key}
	if len(val) > maxEntryBytes {
		return e, fmt.Errorf("%d bytes", len(val))
	}
	var owner, id string
	switch {
	case strings.HasPrefix(key, regPeer):
		owner = key[len(regPeer):]
		var rec peerRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return e, err
		}
		if rec.Peer != owner || !validRegion(rec.Region) {
			return e, errors.New("peer or region")
		}
		e.rec = &rec
	case strings.HasPrefix(key, regSub):
		var ok bool
		if owner, id, ok = strings.Cut(key[len(regSub):], "/"); !ok {
			return e, errors.New("key")
		}
		var info SubscriptionInfo
		if err := json.Unmarshal(val, &info); err != nil {
			return e, err
		}
		if err := info.check(owner, id); err != nil {
			return e, err
		}
		e.sub = &info
	default:
		return e, errors.New("key")
	}
	var err error
	if e.owner, err = peer.Decode(owner); err != nil {
		return e, err
	}
	lease, _, _, _ := e.lease()
	if lease < 100*time.Millisecond || lease > maxLease {
		return e, fmt.Errorf("lease %v", lease)
	}
	return e, nil
}

func (i *SubscriptionInfo) check(owner, id string) error {
	if i.Peer != owner || i.ID != id || id == "" || len(id) > maxNameBytes || strings.ContainsAny(id, "/\x00") {
		return errors.New("peer or id")
	}
	if err := router.Validate(i.Pattern); err != nil {
		return err
	}
	if len(i.Group) > 128 || strings.ContainsAny(i.Group, "/\x00") || !validRegion(i.Region) {
		return errors.New("group or region")
	}
	if _, err := parseStrategy(i.Strategy); err != nil {
		return err
	}
	if len(i.Took) > 0 && i.Group == "" {
		return errTook
	}
	return checkTook(i.Took)
}

func validRegion(r string) bool { return len(r) <= 64 && !strings.ContainsAny(r, "/\x00") }

// Subscriptions returns the mesh-wide subscription set as this replica sees
// it: this node's subscriptions (those made WithLocal excepted) and the
// other peers' live ones, as of the registry's last read.
func (n *Node) Subscriptions(ctx context.Context) ([]SubscriptionInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	out := make([]SubscriptionInfo, 0, len(n.reg.local)+len(n.reg.remote))
	for _, s := range n.reg.local {
		out = append(out, n.entry(s, now)) // its Took is a copy
	}
	for _, r := range n.reg.remote {
		r.Took = cloneTook(r.Took)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b SubscriptionInfo) int { return strings.Compare(a.memberID(), b.memberID()) })
	return out, nil
}

// Route is where signals of a type go in the whole mesh: one plain
// subscription, or one consumer group (each signal to one member, or to
// every member for Broadcast).
type Route struct {
	Group    string // "" for a subscription outside any group
	Strategy string
	Members  []SubscriptionInfo // the subscription, or the group's live members matching the type
}

// Routes lists the routes of the mesh's live subscriptions that match typ,
// as this replica sees the subscription set.
func (n *Node) Routes(typ string) []Route {
	subs, _ := n.Subscriptions(context.Background())
	var out []Route
	groups := map[string]int{}
	for _, s := range subs {
		if !router.Matches(s.Pattern, typ) {
			continue
		}
		if s.Group == "" {
			out = append(out, Route{Strategy: Broadcast.String(), Members: []SubscriptionInfo{s}})
			continue
		}
		i, ok := groups[s.Group]
		if !ok {
			i = len(out)
			groups[s.Group] = i
			out = append(out, Route{Group: s.Group, Strategy: s.Strategy})
		}
		out[i].Members = append(out[i].Members, s)
	}
	return out
}

// CanRoute reports whether any live subscription in the mesh, on any peer,
// takes signals of type typ.
func (n *Node) CanRoute(typ string) bool { return len(n.Routes(typ)) > 0 }

func newSubID(name string) string {
	if name != "" {
		return name
	}
	return signalmesh.NewID()
}
