package node

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/router"
	"github.com/signalmesh/signalmesh/vclock"
)

// Strategy says how the members of a consumer group share its signals.
// Every member computes the same assignment from the subscription set (no
// leader): all members of one group must use the same strategy.
type Strategy struct {
	kind strategyKind
	key  string // Hash: the attribute hashed
}

type strategyKind uint8

const (
	kindBroadcast strategyKind = iota
	kindHash
	kindBalanced
	kindLocalFirst
)

var (
	// Broadcast: every member handles every signal (a subscription's
	// behaviour without a group).
	Broadcast = Strategy{}
	// Hash: each signal to one member, chosen by its subject (HashBy for
	// another attribute): all the signals of one subject go to the same
	// member, in causal order, while the membership stays the same. A
	// signal without a subject is placed by its identity.
	Hash = Strategy{kind: kindHash, key: "subject"}
	// Balanced: each signal to one member, spread evenly by the signal's
	// identity, with no order between members. It spreads by count, not by
	// measured load.
	Balanced = Strategy{kind: kindBalanced}
	// LocalFirst: each signal to a member on the peer that published it;
	// else to one on a peer of the publisher's region (Config.Region);
	// else to any member; within each tier by subject, like Hash.
	LocalFirst = Strategy{kind: kindLocalFirst}
)

// HashBy is Hash by another attribute: "subject", "type", "source", "id",
// or the name of an extension.
func HashBy(attr string) Strategy {
	return Strategy{kind: kindHash, key: attr}
}

// String is the strategy's name in the subscription set.
func (st Strategy) String() string {
	switch st.kind {
	case kindHash:
		return "hash:" + st.key
	case kindBalanced:
		return "balanced"
	case kindLocalFirst:
		return "local-first"
	}
	return "broadcast"
}

// ParseStrategy reads a strategy's String form: "broadcast",
// "hash:<attr>", "balanced" or "local-first".
func ParseStrategy(s string) (Strategy, error) { return parseStrategy(s) }

// parseStrategy reads String's form ("" is Broadcast).
func parseStrategy(s string) (Strategy, error) {
	switch {
	case s == "" || s == "broadcast":
		return Broadcast, nil
	case s == "balanced":
		return Balanced, nil
	case s == "local-first":
		return LocalFirst, nil
	case strings.HasPrefix(s, "hash:") && validAttr(s[5:]):
		return HashBy(s[5:]), nil
	}
	return Strategy{}, fmt.Errorf("node: unknown strategy %q", s)
}

func validAttr(a string) bool {
	if a == "" || len(a) > 64 {
		return false
	}
	for _, r := range a {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// WithGroup makes the subscription a member of a consumer group: the
// members of one group, on any peers, share its signals by the group's
// Strategy (WithStrategy; default Hash), each signal handled by one member.
// A member is a named subscription (its name defaults to "group.<name>"):
// it keeps a cursor, resumes after a restart and spills rather than
// drops. See the package doc, Consumer groups, for failover.
func WithGroup(name string) SubOption {
	return func(c *subConfig) error {
		if name == "" || len(name) > 128 || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("node: group name %q: 1-128 bytes, no '/'", name)
		}
		c.group = name
		return nil
	}
}

// WithStrategy sets how a group's members share its signals (with
// WithGroup; default Hash).
func WithStrategy(st Strategy) SubOption {
	return func(c *subConfig) error {
		if st.kind == kindHash && !validAttr(st.key) {
			return fmt.Errorf("node: HashBy(%q): an attribute name, lower case letters and digits", st.key)
		}
		c.strategy, c.strategySet = st, true
		return nil
	}
}

// WithLocal keeps the subscription out of the mesh-wide subscription set:
// for short-lived subscriptions (a tail, a test probe) that other peers
// need not know about. Not with WithGroup.
func WithLocal() SubOption {
	return func(c *subConfig) error { c.local = true; return nil }
}

// IdempotencyKey is a signal's identity as an event, (source, id), in one
// string: the same for every copy and every delivery of it, on every peer.
// A handler of a consumer group that records the keys it has handled (in
// the same transaction as its effect) makes the duplicates of a failover
// harmless.
func IdempotencyKey(s *signalmesh.Signal) string {
	return strconv.Itoa(len(s.Source)) + ":" + s.Source + s.ID
}

// viewMember is one live member of a group, as this replica sees it.
type viewMember struct {
	id     string // "<peer>/<subscription id>"
	peer   string
	region string
	from   vclock.Clock // eligible for the signals it does not cover
}

// groupView is a group's live members (sorted by id) as the registrar
// last saw them; immutable once published.
type groupView struct {
	members []viewMember
	// regions of the peers the registry knows (peer id -> region), for LocalFirst.
	regions map[string]string
	// marks is each member's last known progress mark, the departed ones
	// included: what it handled its share of.
	marks map[string]vclock.Clock
	// gone are the members that departed lately (10 leases): a signal
	// that would be theirs is counted as handled for them (Taken).
	gone []viewMember
}

// covers reports whether clock c covers the journaled signal s.
func covers(c vclock.Clock, s *signalmesh.Signal) bool {
	origin, seq := journal.Place(s)
	return seq != 0 && seq <= c.Get(origin)
}

// owner is the id of the member that handles s under st, "" for none.
func (v *groupView) owner(st Strategy, s *signalmesh.Signal) string {
	return v.ownerAmong(st, s, v.members, nil)
}

// ownerAmong is owner over the members and extra.
func (v *groupView) ownerAmong(st Strategy, s *signalmesh.Signal, members, extra []viewMember) string {
	cands, key := v.candidates(st, s, members, extra)
	return rendezvous(cands, key)
}

// candidates is the members and extra eligible for s under st, and the
// key rendezvous hashing places s by.
func (v *groupView) candidates(st Strategy, s *signalmesh.Signal, members, extra []viewMember) ([]*viewMember, string) {
	var cands []*viewMember
	for _, ms := range [][]viewMember{members, extra} {
		for i := range ms {
			if !covers(ms[i].from, s) {
				cands = append(cands, &ms[i])
			}
		}
	}
	key := s.Source + "\x00" + s.ID
	switch st.kind {
	case kindHash:
		if k := attrOf(st.key, s); k != "" {
			key = k
		}
	case kindLocalFirst:
		if s.Subject != "" {
			key = s.Subject
		}
		origin, _ := s.Extensions[signalmesh.ExtPeer].(string)
		cands = localTier(cands, origin, v.regions[origin])
	}
	return cands, key
}

// goneOwner judges a signal a live member owns by the view, for the
// members that departed lately (gone) and would have been its owner
// before they left: those ranked above every live member for it, taken
// in the assignment's order, each left out in turn as a departure does.
// The first whose progress mark covers it judged it as its own (those
// above it had not judged it yet) and handled it: handled is true. Else
// owner is the first of them, the member it is handled for, "" for none
// (it is a live member's own). A late signal (delivered after later
// ones of its origin) lies below marks that never judged it: for it,
// marks say nothing.
func (v *groupView) goneOwner(st Strategy, s *signalmesh.Signal, late bool) (owner string, handled bool) {
	if len(v.gone) == 0 {
		return "", false
	}
	cands, key := v.candidates(st, s, v.members, v.gone)
	type ranked struct {
		id    string
		score uint64
		gone  bool
	}
	rs := make([]ranked, len(cands))
	for i, m := range cands {
		gone := slices.ContainsFunc(v.gone, func(x viewMember) bool { return x.id == m.id })
		rs[i] = ranked{m.id, score(key, m.id), gone}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int { return cmp.Compare(b.score, a.score) })
	for _, r := range rs {
		if !r.gone {
			break // a live member's, as the view says
		}
		if !late && covers(v.marks[r.id], s) {
			return "", true
		}
		if owner == "" {
			owner = r.id
		}
	}
	return owner, false
}

// localTier is the members on peer origin if any, else those of its
// region if any, else all of them.
func localTier(cands []*viewMember, origin, region string) []*viewMember {
	var same, near []*viewMember
	for _, m := range cands {
		switch {
		case m.peer == origin:
			same = append(same, m)
		case region != "" && m.region == region:
			near = append(near, m)
		}
	}
	if len(same) > 0 {
		return same
	}
	if len(near) > 0 {
		return near
	}
	return cands
}

func attrOf(attr string, s *signalmesh.Signal) string {
	switch attr {
	case "subject":
		return s.Subject
	case "type":
		return s.Type
	case "source":
		return s.Source
	case "id":
		return s.ID
	}
	if v, ok := s.Extensions[attr]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// rendezvous picks the member with the highest hash of (key, member):
// removing a member moves only its own keys, adding one takes keys only
// for itself.
func rendezvous(cands []*viewMember, key string) string {
	best, bestScore := "", uint64(0)
	for _, m := range cands {
		if sc := score(key, m.id); best == "" || sc > bestScore {
			best, bestScore = m.id, sc
		}
	}
	return best
}

// score is member id's rendezvous score for key.
func score(key, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finaliser: FNV's low bits alone spread poorly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// groupMember is a subscription's membership of a consumer group.
type groupMember struct {
	id       string // "<peer>/<subscription id>"
	strategy Strategy
	view     atomic.Pointer[groupView] // published by the registrar
	cur      *groupView                // the view the run goroutine judges by (owned by it)
	mark     atomic.Pointer[vclock.Clock]
	taken    atomic.Int64 // signals handled for departed members
	// took is what this member handled for each departed member (member
	// id -> the places), announced with its mark, so that a member that
	// comes back passes them over (took.go); a copy is stored at each
	// change. tookAt is when each was last added to, pending the departed
	// member a signal being handled is taken for (the run goroutine's).
	tookMu  sync.Mutex
	took    map[string]Places // under tookMu
	tookAt  map[string]time.Time
	pending string
	// returned is when a member that had a cursor (it comes back) joined;
	// until returnLeases leases after, it passes over what the others
	// announce they handled for it (forMe, stored by the registrar).
	returned time.Time
	forMe    atomic.Pointer[[]tookFrom]
}

func newGroupMember(info SubscriptionInfo, st Strategy) *groupMember {
	return &groupMember{id: info.memberID(), strategy: st}
}

// shares reports whether members share the signals (not Broadcast).
func (g *groupMember) shares() bool { return g.strategy.kind != kindBroadcast }

// publish sets the progress mark the next renewal announces.
func (g *groupMember) publish(c vclock.Clock) { g.mark.Store(&c) }

// kick wakes the run goroutine (a new view of its group).
func (s *Subscription) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Taken is the number of signals this group member handled for members
// that departed: their share since their last progress mark, handed over,
// and, for 10 leases after they departed, the signals that would have
// been theirs and that their mark does not cover (a member cut off by a
// partition handles those too); and
// the second copies of events (published on two peers) it handed over.
// It bounds the duplicates failovers, partitions and copies caused here.
// Zero outside groups.
func (s *Subscription) Taken() int64 {
	if s.group == nil {
		return 0
	}
	return s.group.taken.Load()
}

// syncView moves the run goroutine to the registrar's latest view of the
// group, taking over the share of members that left it. It reports
// whether there is a view at all.
func (s *Subscription) syncView() bool {
	g := s.group
	v := g.view.Load()
	if v == nil || v == g.cur {
		return v != nil
	}
	old := g.cur
	g.cur = v
	if old == nil || !g.shares() {
		return true
	}
	g.pruneTook(v)
	removed := map[string]bool{}
	for _, m := range old.members {
		if !slices.ContainsFunc(v.members, func(x viewMember) bool { return x.id == m.id }) {
			removed[m.id] = true
		}
	}
	if len(removed) > 0 {
		s.takeOver(old, v, removed)
	}
	return true
}

// takeOver handles the signals that members which left had not handled
// (those their last progress mark does not cover), that this member had
// already passed over as theirs and owns now. A member that left cleanly
// left its final mark: nothing is handled twice. One that died marked
// its progress at its last renewal: what it handled after that is
// handled again here (counted in Taken). What its mark covers beyond
// this member's cursor (this member lags behind it) passOver passes over.
func (s *Subscription) takeOver(old, cur *groupView, removed map[string]bool) {
	g := s.group
	var after vclock.Clock
	first := true
	for id := range removed {
		if first {
			after, first = cur.marks[id], false
		} else {
			after = meet(after, cur.marks[id])
		}
	}
	sigs, err := s.n.window(s.pattern, after, s.cursor)
	if err != nil {
		if s.n.ctx.Err() == nil {
			s.n.log.Error("node: read the journal to take over a departed member's share", "group", s.info.Group, "err", err)
		}
		return
	}
	for _, sig := range sigs {
		if s.n.ctx.Err() != nil && s.n.crashing() {
			return // as a kill -9 would: nothing more is handled
		}
		if !covers(s.cursor, sig) {
			continue // not passed over yet: judged by the new view when it comes
		}
		o := old.owner(g.strategy, sig)
		if !removed[o] || covers(cur.marks[o], sig) || cur.owner(g.strategy, sig) != g.id {
			continue
		}
		id := identityHash(sig)
		if s.handled.has(id) {
			continue
		}
		g.taken.Add(1) // before the handler: Taken bounds the duplicates at any moment
		s.n.m.takenOver.Add(1)
		if !s.call(sig) {
			return // closed
		}
		s.handled.add(id)
		origin, seq := journal.Place(sig)
		g.tookFor(o, origin, seq)
	}
}

// groupDefaults completes a group member's configuration: Hash, and the
// name "group.<group>", unless given; one member of a name per node.
func (n *Node) groupDefaults(cfg *subConfig) error {
	if cfg.group == "" {
		return nil
	}
	if cfg.local {
		return fmt.Errorf("node: a group member cannot be WithLocal")
	}
	if !cfg.strategySet {
		cfg.strategy = Hash
	}
	if cfg.name == "" {
		cfg.name = "group." + cfg.group
	}
	n.reg.mu.Lock()
	_, taken := n.reg.local[cfg.name]
	n.reg.mu.Unlock()
	if taken {
		return fmt.Errorf("node: subscription %q exists on this node (give members of one group on one node names of their own)", cfg.name)
	}
	return nil
}

// passOver reports whether sig is another member's (the cursor moves past
// it), or was a departed member's that handled it (its mark covers it); a
// signal of its own that would be a departed member's is counted in
// Taken. It runs on the run goroutine.
func (s *Subscription) passOver(sig *signalmesh.Signal, origin string, seq uint64, m mark) bool {
	g := s.group
	g.pending = ""
	if !g.shares() {
		return false
	}
	s.syncView()
	if g.cur.owner(g.strategy, sig) != g.id {
		s.skip(origin, seq, m)
		return true
	}
	if s.returning() && tookForMe(g.forMe.Load(), origin, seq) {
		// This member is back, and another says it handled this very
		// signal for it while it was away.
		s.skip(origin, seq, m)
		s.n.m.passedBack.Add(1)
		return true
	}
	switch o, handled := g.cur.goneOwner(g.strategy, sig, m == markLate); {
	case handled:
		// A member that departed lately judged it as its own before it
		// left (its mark covers it) and handled it: this member lags
		// behind it, and takeOver, which hands over what the departed
		// member's mark does not cover, does not see what it has not
		// judged yet.
		s.skip(origin, seq, m)
		return true
	case o != "":
		g.taken.Add(1) // a departed member's: if it is alive (a partition), it handles it too
		s.n.m.takenOver.Add(1)
		g.pending = o // recorded in Took once handled
	}
	return false
}

// returnLeases is how long after it comes back a member passes over what
// the others announce they handled for it: its backlog and its node's
// catch-up are judged by then.
const returnLeases = 10

// returning reports whether the member came back lately (run goroutine).
func (s *Subscription) returning() bool {
	r := s.group.returned
	return !r.IsZero() && time.Since(r) < returnLeases*s.n.p.Lease
}

// tookFrom is what one other member announced it handled for this one,
// believed up to that member's own mark.
type tookFrom struct {
	places Places
	mark   vclock.Clock
}

func tookForMe(fm *[]tookFrom, origin string, seq uint64) bool {
	if fm == nil {
		return false
	}
	for _, t := range *fm {
		if seq <= t.mark.Get(origin) && t.places.has(origin, seq) {
			return true
		}
	}
	return false
}

// skip passes over another member's signal: the cursor moves past it (in
// memory; a crash judges it again after the restart).
func (s *Subscription) skip(origin string, seq uint64, m mark) {
	if seq != 0 && m != markLate {
		s.cursor = s.cursor.Set(origin, seq)
		s.group.publish(s.cursor)
	}
}

// meet is the entry-wise minimum of two clocks.
func meet(a, b vclock.Clock) vclock.Clock {
	var out vclock.Clock
	for _, e := range a.Entries() {
		if m := min(e.N, b.Get(e.Peer)); m > 0 {
			out = out.Set(e.Peer, m)
		}
	}
	return out
}

// window returns the signals matching pattern that upto covers and after
// does not, in replay order: read from the journal by place (the cost is
// the window's size, not the journal's), and, for those whose journal
// entry has not arrived, from the signals the node delivered.
func (n *Node) window(pattern string, after, upto vclock.Clock) ([]*signalmesh.Signal, error) {
	var out []*signalmesh.Signal
	var missing []causal.Ref
	for _, e := range upto.Entries() {
		for seq := after.Get(e.Peer) + 1; seq <= e.N; seq++ {
			sig, err := n.jr.At(n.ctx, e.Peer, seq)
			if errors.Is(err, journal.ErrNotFound) {
				missing = append(missing, causal.Ref{Origin: e.Peer, Seq: seq})
				continue
			}
			if err != nil {
				return nil, err
			}
			if router.Matches(pattern, sig.Type) {
				out = append(out, sig)
			}
		}
	}
	if len(missing) > 0 {
		err := n.do(n.ctx, func() {
			for _, r := range missing {
				sig := n.fresh.settled[r]
				if f, ok := n.fresh.sigs[r]; ok {
					sig = f.s
				}
				if sig != nil && router.Matches(pattern, sig.Type) {
					out = append(out, sig)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	journal.Order(out)
	return out, nil
}
