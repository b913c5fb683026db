package node

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/vclock"
)

// Member is another peer of the mesh with a live entry in the subscription
// set (its node record, renewed every Params.Lease/3), as this replica sees it.
type Member struct {
	Peer      peer.ID
	Region    string
	Connected bool
	// Suspected: its lease is live but this node has no connection to
	// it: a partition, or a peer that died less than a lease ago.
	Suspected bool
	Groups    []string // the consumer groups it has members in
}

// MemberEventKind says what happened to a member.
type MemberEventKind uint8

const (
	MemberUp        MemberEventKind = iota + 1 // its entry became live
	MemberDown                                 // its lease ran out, or it left
	MemberSuspected                            // live lease, no connection: a partition is suspected
	MemberReachable                            // connected again after MemberSuspected
)

func (k MemberEventKind) String() string {
	switch k {
	case MemberUp:
		return "up"
	case MemberDown:
		return "down"
	case MemberSuspected:
		return "suspected"
	case MemberReachable:
		return "reachable"
	}
	return "unknown"
}

// MemberEvent is a change in the mesh's membership.
type MemberEvent struct {
	Kind   MemberEventKind
	Peer   peer.ID
	Region string
	At     time.Time
}

type memberWatch struct {
	c    chan MemberEvent
	once sync.Once
}

// Members lists the other peers with a live entry in the subscription set
// at the registry's last read (every Params.Lease/8), sorted by id.
func (n *Node) Members() []Member {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	out := make([]Member, 0, len(n.reg.members))
	for _, m := range n.reg.members {
		c := *m
		c.Groups = slices.Clone(m.Groups)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	return out
}

// WatchMembers returns a channel of membership events (buffer buf, at
// least 1) and a function that stops the watch and closes the channel;
// Close stops every watch. When the channel is full an event is dropped
// and counted (Status.Dropped "member_event"): Members is always current.
func (n *Node) WatchMembers(buf int) (<-chan MemberEvent, func()) {
	w := &memberWatch{c: make(chan MemberEvent, max(buf, 1))}
	n.reg.mu.Lock()
	if n.ctx.Err() != nil {
		n.reg.mu.Unlock()
		close(w.c)
		return w.c, func() {}
	}
	n.reg.watchers[w] = struct{}{}
	n.reg.mu.Unlock()
	return w.c, func() {
		n.reg.mu.Lock()
		delete(n.reg.watchers, w)
		n.reg.mu.Unlock()
		w.once.Do(func() { close(w.c) })
	}
}

// closeWatches ends every watch (Close, after the registrar stopped).
func (n *Node) closeWatches() {
	if n.reg == nil {
		return
	}
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	for w := range n.reg.watchers {
		w.once.Do(func() { close(w.c) })
		delete(n.reg.watchers, w)
	}
}

// emit tells every watcher; called with reg.mu held.
func (n *Node) emit(ev MemberEvent) {
	for w := range n.reg.watchers {
		select {
		case w.c <- ev:
		default:
			n.m.drop("member_event")
		}
	}
}

// publishRegistry publishes what a read of the set found: the other
// peers' live subscriptions, the members (with their events), and each
// local group's view.
func (n *Node) publishRegistry(entries []regEntry, full bool, now time.Time) {
	self := n.self.String()
	var remote []SubscriptionInfo
	members := map[string]*Member{}
	regions := map[string]string{self: n.cfg.Region}
	member := func(p, region string) *Member {
		m := members[p]
		if m == nil {
			id, _ := peer.Decode(p)
			m = &Member{Peer: id, Region: region}
			members[p] = m
		}
		return m
	}
	marks := map[string]vclock.Clock{}
	for _, e := range entries {
		switch {
		case e.rec != nil:
			regions[e.rec.Peer] = e.rec.Region
			if e.live && e.rec.Peer != self {
				member(e.rec.Peer, e.rec.Region)
			}
		case e.sub != nil:
			if _, ok := regions[e.sub.Peer]; !ok {
				regions[e.sub.Peer] = e.sub.Region
			}
			if e.sub.Group != "" {
				marks[e.sub.memberID()] = e.sub.Mark
			}
			if !e.live || e.sub.Peer == self {
				continue
			}
			remote = append(remote, *e.sub)
			m := member(e.sub.Peer, e.sub.Region)
			if e.sub.Group != "" && !slices.Contains(m.Groups, e.sub.Group) {
				m.Groups = append(m.Groups, e.sub.Group)
			}
		}
	}
	n.reg.mu.Lock()
	for id, mark := range marks {
		if local, ok := strings.CutPrefix(id, self+"/"); ok && n.reg.local[local] != nil {
			continue // held here: its mark is in memory
		}
		// Marks only grow: a read older than a local member's leave does
		// not take its final mark back.
		n.reg.departed[id] = departedEntry{mark: n.reg.departed[id].mark.Merge(mark), at: now}
	}
	for id, d := range n.reg.departed {
		if now.Sub(d.at) > 10*n.p.Lease {
			delete(n.reg.departed, id)
		}
	}
	n.reg.mu.Unlock()
	for _, m := range members {
		m.Connected = n.host.Network().Connectedness(m.Peer) == network.Connected
		m.Suspected = !m.Connected
	}
	n.publishTook(entries)
	n.publishViews(remote, regions, members)

	n.noteMembers(members, remote, full, now)
}

// publishTook gives each local group member that came back lately what
// the other members of its group (remote entries, live or left, and local
// members) announced they handled for it while it was away, each believed
// up to the announcer's own mark.
func (n *Node) publishTook(entries []regEntry) {
	self := n.self.String()
	n.reg.mu.Lock()
	var locals, returning []*Subscription
	for _, s := range n.reg.local {
		if s.group != nil && s.group.shares() {
			locals = append(locals, s)
			if !s.group.returned.IsZero() && time.Since(s.group.returned) < returnLeases*n.p.Lease {
				returning = append(returning, s)
			}
		}
	}
	n.reg.mu.Unlock()
	for _, r := range returning {
		var forMe []tookFrom
		for _, e := range entries {
			if e.sub != nil && e.sub.Peer != self && e.sub.Group == r.info.Group && e.sub.memberID() != r.group.id {
				if p := e.sub.Took[r.group.id]; len(p) > 0 {
					forMe = append(forMe, tookFrom{places: p, mark: e.sub.Mark})
				}
			}
		}
		for _, o := range locals {
			if o != r && o.info.Group == r.info.Group {
				if p := o.group.tookBy(r.group.id); len(p) > 0 {
					forMe = append(forMe, tookFrom{places: p, mark: *o.group.mark.Load()})
				}
			}
		}
		r.group.forMe.Store(&forMe)
	}
}

// noteMembers publishes the members and the remote subscriptions a read
// found, and tells the watchers what changed.
func (n *Node) noteMembers(members map[string]*Member, remote []SubscriptionInfo, full bool, now time.Time) {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	if full && !n.reg.full {
		n.m.drop("registry_full")
		n.log.Warn("node: the subscription set holds more entries than Params.MaxRegistry; the rest are ignored", "max", n.p.MaxRegistry)
	}
	n.reg.full = full
	for p, m := range members {
		old := n.reg.members[p]
		switch {
		case old == nil:
			n.emit(MemberEvent{Kind: MemberUp, Peer: m.Peer, Region: m.Region, At: now})
			if m.Suspected {
				n.emit(MemberEvent{Kind: MemberSuspected, Peer: m.Peer, Region: m.Region, At: now})
			}
		case m.Suspected && !old.Suspected:
			n.emit(MemberEvent{Kind: MemberSuspected, Peer: m.Peer, Region: m.Region, At: now})
		case !m.Suspected && old.Suspected:
			n.emit(MemberEvent{Kind: MemberReachable, Peer: m.Peer, Region: m.Region, At: now})
		}
	}
	for p, old := range n.reg.members {
		if members[p] == nil {
			n.emit(MemberEvent{Kind: MemberDown, Peer: old.Peer, Region: old.Region, At: now})
		}
	}
	n.reg.members, n.reg.remote = members, remote
}

// publishViews gives each local group member its group's live members,
// when they changed. Not before every peer on the leases topic has a
// live entry (each renews when a peer joins the topic that it has not
// heard lately, or on this node's Hello: see pace.go), Lease/20 at least
// (peers dialled at the start join the topic meanwhile), or half a lease
// passed: the CRDT's copies of the entries can be old, and a member that
// judged signals before hearing of the others would take their shares
// too.
func (n *Node) publishViews(remote []SubscriptionInfo, regions map[string]string, members map[string]*Member) {
	if !n.reg.ready {
		up := time.Since(n.reg.started)
		if up < n.p.Lease/2 && (up < n.p.Lease/20 || !n.heardAll(members)) {
			return
		}
		n.reg.ready = true
		n.reg.heardLive.Store(true)
	}
	n.reg.mu.Lock()
	byGroup := map[string][]*Subscription{}
	for _, s := range n.reg.local {
		if s.group != nil {
			byGroup[s.info.Group] = append(byGroup[s.info.Group], s)
		}
	}
	n.reg.mu.Unlock()
	for g, locals := range byGroup {
		var ms []viewMember
		for _, s := range locals {
			ms = append(ms, viewMember{id: s.info.memberID(), peer: s.info.Peer, region: n.cfg.Region, from: s.info.From})
		}
		for _, r := range remote {
			if r.Group == g {
				ms = append(ms, viewMember{id: r.memberID(), peer: r.Peer, region: regions[r.Peer], from: r.From})
			}
		}
		slices.SortFunc(ms, func(a, b viewMember) int { return strings.Compare(a.id, b.id) })
		var sig strings.Builder
		for _, m := range ms {
			sig.WriteString(m.id + "|" + m.region + "|" + m.from.String() + "\n")
		}
		if n.reg.sigs[g] == sig.String() {
			continue
		}
		n.reg.mu.Lock()
		marks := make(map[string]vclock.Clock, len(n.reg.departed))
		for id, d := range n.reg.departed {
			marks[id] = d.mark
		}
		n.reg.mu.Unlock()
		if old := n.reg.views[g]; old != nil {
			for _, m := range ms {
				if !slices.ContainsFunc(old.members, func(x viewMember) bool { return x.id == m.id }) {
					// A member joined or came back: renew at once, so that
					// it learns soon what this node's members took over
					// for it while it was away (their Took).
					select {
					case n.reg.renewNow <- struct{}{}:
					default:
					}
					break
				}
			}
		}
		v := &groupView{members: ms, regions: regions, marks: marks, gone: n.goneMembers(g, ms)}
		n.reg.sigs[g], n.reg.views[g] = sig.String(), v
		for _, s := range locals {
			s.group.view.Store(v)
			s.kick()
		}
	}
	for g := range n.reg.sigs {
		if byGroup[g] == nil {
			delete(n.reg.sigs, g)
			delete(n.reg.views, g)
			delete(n.reg.gone, g)
		}
	}
}

// groups is the live members of each consumer group in the mesh.
func (n *Node) groups() map[string][]string {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	out := map[string][]string{}
	for _, s := range n.reg.local {
		if s.group != nil {
			out[s.info.Group] = append(out[s.info.Group], s.info.memberID())
		}
	}
	for _, r := range n.reg.remote {
		if r.Group != "" {
			out[r.Group] = append(out[r.Group], r.memberID())
		}
	}
	for g := range out {
		slices.Sort(out[g])
	}
	return out
}

// leaveGroups closes this node's consumer group members before the node
// stops, so that each leaves its final progress mark in the set. A
// handler that does not return within Params.HandOff holds up no more of
// Close: the leave goes on once the node's context ends (the member's
// lease runs out instead). The function it returns waits for the leave;
// Close calls it once the node's context is cancelled.
func (n *Node) leaveGroups() (wait func()) {
	n.reg.mu.Lock()
	var members []*Subscription
	for _, s := range n.reg.local {
		if s.group != nil {
			members = append(members, s)
		}
	}
	n.reg.mu.Unlock()
	if len(members) == 0 {
		return func() {}
	}
	n.reg.mu.Lock()
	if n.reg.leaving == nil {
		n.reg.leaving, n.reg.acked = map[string]string{}, map[string]map[string]bool{}
	}
	for _, s := range members {
		n.reg.leaving[subKey(s.info.Peer, s.info.ID).String()] = ""
	}
	n.reg.mu.Unlock()
	done := make(chan struct{})
	go func() { // owned by Close, which waits for it
		defer close(done)
		for _, s := range members {
			if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
				n.log.Warn("node: leave consumer group", "group", s.info.Group, "err", err)
			}
		}
	}()
	t := time.NewTimer(max(n.p.HandOff, 0))
	defer t.Stop()
	select {
	case <-done:
		n.awaitLeaveAcks(members, t.C)
	case <-t.C:
		n.log.Warn("node: close: consumer group members still handling after the hand-off time; their leases run out instead")
	}
	return func() { <-done }
}

// awaitLeaveAcks waits, until expired, for every connected peer with
// members in the groups that members left to acknowledge each leave (see
// leaseMsg.Acks): the final marks must be out before the host closes, or
// those peers take the members' shares over from older marks and handle
// again what they handled since.
func (n *Node) awaitLeaveAcks(members []*Subscription, expired <-chan time.Time) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n.reg.mu.Lock()
		missing := 0
		for _, s := range members {
			t := n.reg.leaving[subKey(s.info.Peer, s.info.ID).String()]
			if t == "" {
				continue // not gossiped (the node's context ended first)
			}
			acked := n.reg.acked[t]
			for p, m := range n.reg.members {
				if slices.Contains(m.Groups, s.info.Group) && !acked[p] &&
					n.host.Network().Connectedness(m.Peer) == network.Connected {
					missing++
				}
			}
		}
		n.reg.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-expired:
			n.m.drop("leave_unacknowledged")
			n.log.Warn("node: close: a peer did not acknowledge this node's consumer group members' leave within the hand-off time; it takes their shares over after their leases", "missing", missing)
			return
		}
	}
}

// goneMembers notes the members of group g that were in its last view and
// are not in ms, and returns those gone within the last 10 leases. It
// runs on the registrar.
func (n *Node) goneMembers(g string, ms []viewMember) []viewMember {
	now := time.Now()
	gone := n.reg.gone[g]
	if gone == nil {
		gone = map[string]goneMember{}
		n.reg.gone[g] = gone
	}
	if old := n.reg.views[g]; old != nil {
		for _, m := range old.members {
			if !slices.ContainsFunc(ms, func(x viewMember) bool { return x.id == m.id }) {
				gone[m.id] = goneMember{m: m, at: now}
			}
		}
	}
	var out []viewMember
	for id, gm := range gone {
		switch {
		case slices.ContainsFunc(ms, func(x viewMember) bool { return x.id == id }), now.Sub(gm.at) > 10*n.p.Lease:
			delete(gone, id) // back, or long gone
		default:
			out = append(out, gm.m)
		}
	}
	slices.SortFunc(out, func(a, b viewMember) int { return strings.Compare(a.id, b.id) })
	return out
}

type goneMember struct {
	m  viewMember
	at time.Time
}
