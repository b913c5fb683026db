package causal

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/signalmesh/signalmesh/internal/bloomline"
)

// Errors from Core.Add. Neither changes what the core delivers.
var (
	// ErrDuplicate: this (origin, sequence) was delivered or is waiting.
	ErrDuplicate = errors.New("causal: duplicate")
	// ErrFull: the signal is not ready and the buffer holds Params.Limit
	// signals. The core remembers that the signal exists (Pull names it
	// again); the caller should count the drop and keep nothing.
	ErrFull = errors.New("causal: buffer full")
)

// Meta is what the core reads of a signal: its origin's peer ref, its
// stamp, its causeid and its identity.
type Meta struct {
	Origin string // PeerRef of the publishing peer
	Stamp
	Cause string // the causeid extension; "" none
	// CauseSource, when set, is the cause's source: only a signal with
	// this (source, id) is the cause. Empty: any source.
	CauseSource string
	Source      string // CloudEvents source
	ID          string // CloudEvents id
	Digest      uint64 // of the content; equal for the same content
}

// Ref is the (origin, sequence) of m.
func (m *Meta) Ref() Ref { return Ref{Origin: m.Origin, Seq: m.Seq} }

// Copy is one journaled signal with a given id.
type Copy struct {
	Ref    Ref
	Source string
	Digest uint64
}

// Index finds journaled signals by id. The core asks it only when its own
// memory cannot answer: whether a cause was delivered, whether a signal
// repeats an identity delivered long ago. It is the core's one window on
// storage (like raft's Storage): implementations read, never call back into
// the core, and may be slow only rarely.
type Index interface {
	// ByID returns every journaled signal whose id is id, of any source
	// (nil when there is none).
	ByID(id string) []Copy
	// Journaled reports whether the signal at r is in the journal: a
	// dependency that is there is on its way (Pull), never given up (see
	// Params.DepWait).
	Journaled(r Ref) bool
}

// Params bound the core.
type Params struct {
	// Limit is the most signals waiting for a dependency (at least 1).
	// Past it, a signal that is not ready is refused with ErrFull and pulled
	// again later (see Pull): the bound costs time, never progress.
	Limit int
	// CauseWait is how long, in the caller's time unit (see Add and Tick),
	// a signal waits for its causeid to be delivered. After that it is
	// released without it (Release.CauseLost): a cause that is not in the
	// mesh at all (a typo, an id from outside) must not hold its effect,
	// and the rest of its origin's signals, forever. 0: wait forever.
	CauseWait int64
	// OriginLimit is the most signals of one origin that may wait (0: up
	// to Limit). Past it that origin's signals are refused (and pulled
	// again later) while the others' still get in; and when the buffer is
	// full, the origin holding the most gives up its highest waiting
	// signal to one that holds fewer. One origin flooding signals that
	// never become ready cannot keep the others out.
	OriginLimit int
	// DepWait is how long a signal waits for a dependency (its origin's
	// previous signal or a named one) that the core has not seen and the
	// Index does not hold: one lost with the only peers that had it (a
	// publisher killed before anyone journaled its signal). After that it
	// is released without it (Release.DepLost); a skipped previous signal
	// that turns up later is still delivered (Release.Late). 0: wait
	// forever.
	DepWait int64
	// Recent is how many delivered identities the core remembers in memory
	// (older ones are found through Index). Default 65,536.
	Recent int
	// BloomBits sizes the filter of delivered ids that spares Index lookups
	// for fresh ids (rounded up to 64). Default 2^24 (2 MiB).
	BloomBits int
	// Gone, when set, reports an id whose signals may have left the
	// journal before this core's state began (a node that joined from a
	// snapshot of what another peer retained, say): an effect whose
	// cause has no copy in the Index and whose id Gone reports is not held
	// for it, as if its cause had been delivered. It may answer yes for an
	// id that never was (a filter's false positive): such an effect is
	// then delivered without waiting for a cause that comes later.
	Gone func(id string) bool
	// Recall, when set, finds the floor of an origin the core holds
	// nothing of: one Forget dropped (in this core or in one whose State
	// this one was restored from). It is asked when the core meets such an
	// origin (a signal of it, a dependency or a cause on it, Know, Decide),
	// at most once until the origin is forgotten again (a "none" is
	// remembered for the last 4,096 origins so answered: one never
	// forgotten is asked again only once that many others were), and must
	// answer for every origin Forget returned (see the package doc,
	// Origins that left). It cannot fail: an answer "none" for an origin
	// that was forgotten makes the core take it for a new one (the caller
	// should count such failures). Nil: nothing is ever recalled (do not
	// call Forget).
	Recall func(origin string) (Floor, bool)
}

// Release is a signal the core delivers, in causal order.
type Release[T any] struct {
	Meta Meta
	V    T
	// Dup: a signal with the same (source, id) and the same content was
	// delivered before (an idempotent retry, perhaps published on another
	// peer): do not hand it to subscribers again.
	Dup bool
	// Conflict: a signal with the same (source, id) but different content
	// was delivered before. This one is delivered too; count it.
	Conflict bool
	// CauseLost: released after Params.CauseWait without its cause.
	CauseLost bool
	// CauseLater: its cause is a later signal of its own origin (an effect
	// published before its cause on one peer); the origin's order won
	// (only without a CauseWait: see the package doc).
	CauseLater bool
	// DepLost: released after Params.DepWait without a dependency (or its
	// origin's previous signals) that no peer had offered and the journal
	// did not hold.
	DepLost bool
	// Decision is what was given up for it (with DepLost or CauseLost): a
	// caller that records it and hands it back to Decide after a restart
	// spares the replay of its journal the same waits.
	Decision Decision
	// Late: delivered after later signals of its own origin, which were
	// released without it (DepLost): its place in its origin's order was
	// given up.
	Late bool
	// LamportClamped: its Lamport time was above what its predecessor and
	// dependencies allow (a buggy or hostile publisher); the core counted
	// it as the highest allowed. Count it.
	LamportClamped bool
}

// Gap is a range of sequence numbers of one origin that the core knows of
// (from a signal or a dependency) and has not seen or delivered.
type Gap struct {
	Origin   string
	From, To uint64
}

type item[T any] struct {
	m          Meta
	v          T
	arrived    int64 // when it was added
	causeSince int64 // when its CauseWait began, if causeSet (see park)
	causeSet   bool
	causeLater bool // its cause is a later signal of its own origin: not a dependency
	causeLost  bool
	depLost    []Ref  // named dependencies given up (DepWait)
	gapLost    bool   // its origin's previous signals were given up
	gapFrom    uint64 // the first of them
	hidx       int    // its place in its origin's seqHeap
}

type frontierEntry struct {
	seq, lamport uint64
}

// loss marks an origin whose signals from `from` on were delivered after
// something given up (DepWait): a dependency, a hole in its order, or a
// named signal that was itself so marked. Frontier names none of them
// until lossHold after the last such delivery (see there).
type loss struct {
	from uint64
	at   int64 // the core's time of the last delivery that lost something
	dep  bool  // a dependency was lost (filling the origin's holes does not clear it)
}

// lossHold is how long, in DepWait, an origin stays unnamed after its last
// delivery that lost something: about as long as the other replicas, which
// learnt of the same signals at about the same time, take to give up the
// same.
const lossHold = 2

// Core decides what a peer delivers and when: dedup by (origin, sequence)
// and by identity, causal readiness (own previous signal, direct
// dependencies, causeid), the bounded buffer, and the frontier that the
// peer's next signal depends on. It is a plain data structure: no
// goroutines, no clock (time is what the caller passes), no I/O except
// through Index. It is not safe for concurrent use. For a given sequence of
// calls (and Index answers) its outputs are always the same.
type Core[T any] struct {
	p  Params
	ix Index

	delivered map[string]uint64      // origin -> highest delivered (contiguous)
	known     map[string]uint64      // origin -> highest sequence heard of
	knownAt   map[string][]knownMark // origin -> when its known sequence rose (firstKnown)
	waiting   map[Ref]*item[T]
	perOrigin map[string]int         // origin -> how many of its signals wait
	bySeq     map[string]*seqHeap[T] // origin -> its waiting signals, highest sequence on top
	latest    latestHeap[T]          // the waiting signals, latest Lamport time on top (lazily pruned)
	evicted   int64
	onEvict   func(Ref)        // tests: told of each eviction
	waitID    map[string][]Ref // id -> waiting signals with it
	onRef     map[Ref][]Ref    // undelivered dependency -> waiting items blocked on it
	onCause   map[string][]Ref // undelivered cause id -> waiting items blocked on it
	refused   map[Ref]refusal  // refused with ErrFull or evicted -> when first, and whether its CauseWait had begun (bounded: maxRefused)

	frontier    map[string]frontierEntry // delivered signals no later delivered one names
	lost        map[string]loss          // origins Frontier does not name for now (see loss)
	maxLamport  uint64
	lastLamport map[string]uint64 // origin -> Lamport time of its last delivered signal (as bounded)
	now         int64             // the latest time given to Add or Tick

	skipped   map[string][]Gap  // origin -> sequences given up (DepWait), still deliverable late
	skipRing  []Gap             // the skipped ranges in the order given up, to forget the oldest
	depScan   int64             // when Tick last looked for dependencies to give up
	holes     map[string]hole   // origin -> the hole Pull stops at, and since when (see skipHoles)
	listed    map[string]uint64 // origin -> highest sequence the journal listed (Know)
	lateKnown map[Ref]bool      // skipped signals the journal announced (Know): Pull names them
	afterGap  map[Ref]uint64    // the signals right after a hole skipHoles gave up -> the hole's first sequence
	decided   map[Ref]Decision  // given up before a restart (Decide): not waited for again
	preSkip   map[Ref]uint64    // (origin, first) of a hole given up before a restart -> its last (see Pull)

	bloom  []uint64
	recent map[string][]recentID // id -> delivered identities with it
	slab   []recentID            // where remember takes the next id's slice from
	ring   []string
	next   int

	sources map[string]string // sources of remembered identities, held once (source)

	frontierScratch []originFrontier // Frontier's working list

	forgotten, recalled int64               // origins Forget dropped, and Recall gave back (forget.go)
	noFloor             map[string]struct{} // origins Recall had no floor for (floorOf)
	noFloorRing         []string            // noFloor's entries in the order added, to forget the oldest
	noFloorNext         int
	dropped             int // origins forgotten since the per-origin maps were last copied (shrink)
}

type recentID struct {
	source string
	digest uint64
}

// New returns a core that has delivered nothing. ix may be nil (nothing is
// journaled).
func New[T any](p Params, ix Index) (*Core[T], error) {
	if p.Limit < 1 {
		return nil, fmt.Errorf("causal: Params.Limit %d, must be at least 1", p.Limit)
	}
	if p.CauseWait < 0 || p.Recent < 0 || p.BloomBits < 0 {
		return nil, fmt.Errorf("causal: negative parameter in %+v", p)
	}
	if p.Recent == 0 {
		p.Recent = 1 << 16
	}
	if p.BloomBits == 0 {
		p.BloomBits = 1 << 24
	}
	if ix == nil {
		ix = noIndex{}
	}
	bloom := make([]uint64, (p.BloomBits+63)/64)
	bloomline.Touch(bloom)
	return &Core[T]{
		p: p, ix: ix,
		delivered: map[string]uint64{}, known: map[string]uint64{}, knownAt: map[string][]knownMark{},
		waiting: map[Ref]*item[T]{}, perOrigin: map[string]int{}, bySeq: map[string]*seqHeap[T]{}, waitID: map[string][]Ref{}, onRef: map[Ref][]Ref{}, onCause: map[string][]Ref{}, refused: map[Ref]refusal{},
		frontier: map[string]frontierEntry{}, lost: map[string]loss{}, lastLamport: map[string]uint64{},
		skipped: map[string][]Gap{}, holes: map[string]hole{}, listed: map[string]uint64{}, lateKnown: map[Ref]bool{}, afterGap: map[Ref]uint64{}, decided: map[Ref]Decision{}, preSkip: map[Ref]uint64{},
		bloom:  bloom,
		recent: map[string][]recentID{}, ring: make([]string, p.Recent), sources: map[string]string{},
	}, nil
}

type noIndex struct{}

func (noIndex) ByID(string) []Copy { return nil }
func (noIndex) Journaled(Ref) bool { return false }

// Add offers a signal, at time now (in the caller's unit, used only for
// CauseWait). It returns the signals that became deliverable, in causal
// order: this one and any waiting signals it unblocked. On error nothing
// was released.
func (c *Core[T]) Add(m Meta, v T, now int64) ([]Release[T], error) {
	if m.Seq == 0 || m.Origin == "" {
		return nil, fmt.Errorf("%w: no origin or sequence", ErrMeta)
	}
	for _, d := range m.Deps {
		if d.Origin == m.Origin {
			return nil, fmt.Errorf("%w: a dependency on its own origin (implicit)", ErrMeta)
		}
	}
	c.recall(m.Origin)
	for _, d := range m.Deps {
		c.recall(d.Origin)
	}
	r := m.Ref()
	if m.Seq <= c.delivered[m.Origin] {
		if c.unskip(r) {
			c.now = max(c.now, now)
			delete(c.lateKnown, r)
			out := []Release[T]{c.deliverLate(&item[T]{m: m, v: v, arrived: now})}
			return c.wakeCause(m.ID, out), nil // effects that wait for it as their cause follow
		}
		return nil, ErrDuplicate
	}
	if _, ok := c.waiting[r]; ok {
		return nil, ErrDuplicate
	}
	c.now = max(c.now, now)
	c.mark(r) // even if refused below: Pull names it again
	if m.Cause == m.ID && m.Cause != "" {
		m.Cause = "" // a signal is not its own cause
	}
	// A waiting signal whose cause is this one, a later signal of the same
	// origin, would wait for it forever: this one waits for it in its
	// origin's order. Without a CauseWait the publisher's order wins; the
	// causeid is not a dependency then (the same on every replica). With
	// one, it waits for another copy of its cause (the first try, published
	// elsewhere) until CauseWait ends, like any cause.
	var out []Release[T]
	if ws := c.onCause[m.ID]; len(ws) > 0 && c.p.CauseWait <= 0 {
		delete(c.onCause, m.ID) // a release below may park more on it
		var keep []Ref
		for _, w := range ws {
			wi := c.waiting[w]
			if wi == nil {
				continue
			}
			if w.Origin != m.Origin || w.Seq > m.Seq || wi.m.laterSource() != m.Source {
				keep = append(keep, w)
				continue
			}
			wi.causeLater = true
			c.unhold(w)
			out = c.release(wi, out)
		}
		if len(keep) > 0 {
			c.onCause[m.ID] = append(keep, c.onCause[m.ID]...)
		}
		if m.Seq <= c.delivered[m.Origin] { // cannot be: a later seq than a waiting one
			return out, nil
		}
	}
	// It lives on the stack unless it has to wait (most signals come
	// ready): release does not keep it, and w below is its copy that waits.
	it := &item[T]{m: m, v: v, arrived: now}
	if d, ok := c.decided[r]; ok { // given up before a restart: not waited for again (kept until delivered: it may be refused)
		it.causeLost = d.Cause && m.Cause != ""
		if from := d.GapFrom; from > 0 && c.delivered[m.Origin]+1 >= from && c.delivered[m.Origin] < m.Seq-1 && !c.waitsBetween(m.Origin, c.delivered[m.Origin]+1, m.Seq-1) {
			delete(c.preSkip, Ref{Origin: m.Origin, Seq: from})
			it.gapLost, it.gapFrom = true, c.delivered[m.Origin]+1
			c.skip(Gap{Origin: m.Origin, From: it.gapFrom, To: m.Seq - 1})
		}
		if d.Deps {
			for _, dep := range m.Deps {
				if c.delivered[dep.Origin] < dep.Seq && !c.ix.Journaled(dep) {
					it.depLost = append(it.depLost, dep)
				}
			}
		}
	}
	if f, ok := c.refused[r]; ok {
		it.arrived = min(it.arrived, f.at) // it has been around since it was first refused
		if f.cause {
			it.causeSince, it.causeSet = f.causeSince, true // its wait for its cause began then
		}
	}
	blk, onCause := c.blocker(it)
	if onCause && c.p.CauseWait > 0 && it.causeSet && now-it.causeSince >= c.p.CauseWait && !c.causeOnItsWay(it, now) {
		it.causeLost, blk = true, nil
	}
	if blk == nil {
		return c.release(it, out), nil
	}
	w := new(item[T])
	*w = *it
	if len(out) > 0 { // room was made; it waits for more than that
		c.hold(r, w)
		for _, d := range m.Deps {
			c.learn(d)
		}
		c.park(w, blk, onCause)
		return out, nil
	}
	if !c.room(w) {
		if f, seen := c.refused[r]; !seen && len(c.refused) < maxRefused {
			// Remember since when it has been around: when it gets in, its
			// waits count from then. If only its cause is missing (what
			// fills the buffer may all wait behind it), its CauseWait
			// starts now, or it never ends.
			c.refused[r] = refusal{at: it.arrived, cause: onCause, causeSince: now}
		} else if seen && onCause && !f.cause {
			f.cause, f.causeSince = true, now
			c.refused[r] = f
		}
		return nil, ErrFull
	}
	for _, d := range m.Deps { // only a waiting signal's dependencies: a refused one names no phantom origins
		c.learn(d)
	}
	c.hold(r, w)
	c.park(w, blk, onCause)
	return nil, nil
}

// room reports whether it may wait: its origin is under OriginLimit, and
// the buffer has room or room is made (evict, evictHeaviest).
func (c *Core[T]) room(it *item[T]) bool {
	if c.p.OriginLimit > 0 && c.perOrigin[it.m.Origin] >= c.p.OriginLimit {
		return c.evictOwn(it) // its origin's share is full: unless its own wait for it, it is pulled again later, like any refused signal
	}
	return len(c.waiting) < c.p.Limit || c.evict(it) || c.p.OriginLimit > 0 && c.evictHeaviest(it)
}

func (c *Core[T]) hold(r Ref, it *item[T]) {
	c.perOrigin[r.Origin]++
	h := c.bySeq[r.Origin]
	if h == nil {
		h = &seqHeap[T]{}
		c.bySeq[r.Origin] = h
	}
	heap.Push(h, it)
	c.waiting[r] = it
	c.latest.push(it, c.waiting)
	c.waitID[it.m.ID] = append(c.waitID[it.m.ID], r)
}

func (c *Core[T]) unhold(r Ref) {
	it := c.waiting[r]
	if it == nil {
		return
	}
	delete(c.waiting, r)
	if c.perOrigin[r.Origin]--; c.perOrigin[r.Origin] <= 0 {
		delete(c.perOrigin, r.Origin)
	}
	if h := c.bySeq[r.Origin]; h != nil {
		heap.Remove(h, it.hidx)
		if h.Len() == 0 {
			delete(c.bySeq, r.Origin)
		}
	}
	rs := c.waitID[it.m.ID]
	for i, x := range rs {
		if x == r {
			rs = append(rs[:i:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(c.waitID, it.m.ID)
	} else {
		c.waitID[it.m.ID] = rs
	}
}

// evict makes room, when the buffer is full, for a signal that waiting
// signals need (they wait for it or for its id as their cause, or it is
// their origin's previous one)
// but that is not ready itself: it drops the waiting signal with the
// latest Lamport time if that is later than it. A full buffer of signals
// that wait for earlier ones would otherwise refuse those earlier ones for
// good (pulled from the journal, each waits for one earlier still): this
// way the chain of what is missing comes in, one needed signal after the
// other. The evicted one stays known (Pull names it again); it is counted
// (Evicted). A signal nothing waits for is refused as before, so a
// stranger cannot push waiting signals out.
func (c *Core[T]) evict(it *item[T]) bool {
	r := it.m.Ref()
	if len(c.onRef[r]) == 0 && len(c.onCause[it.m.ID]) == 0 && c.waiting[Ref{Origin: r.Origin, Seq: r.Seq + 1}] == nil {
		return false // nothing waiting needs it: refused as before (no room for strangers)
	}
	top := c.latest.top(c.waiting)
	if top == nil || !laterThan(top.m, it.m) {
		return false
	}
	c.drop(top)
	return true
}

// evictHeaviest makes room, when the buffer is full, by dropping the
// highest waiting signal of the origin that holds the most, if that origin
// holds at least two more than it's: one origin flooding signals that
// never become ready (a hostile or broken peer) cannot keep the others'
// signals out.
func (c *Core[T]) evictHeaviest(it *item[T]) bool {
	heavy, most := "", 0
	for o, k := range c.perOrigin {
		if k > most || k == most && o < heavy {
			heavy, most = o, k
		}
	}
	if most < c.perOrigin[it.m.Origin]+2 {
		return false
	}
	c.drop((*c.bySeq[heavy])[0])
	return true
}

// evictOwn makes room, when it's origin holds its whole share, for a
// signal the waiting ones of its origin need (their predecessor, a
// dependency, their cause) by dropping that origin's highest waiting
// signal, if that is later than it: the share never refuses what its own
// waiting signals wait for (they would wait for good).
func (c *Core[T]) evictOwn(it *item[T]) bool {
	r := it.m.Ref()
	if c.waiting[Ref{Origin: r.Origin, Seq: r.Seq + 1}] == nil && len(c.onRef[r]) == 0 && len(c.onCause[it.m.ID]) == 0 {
		return false
	}
	h := c.bySeq[r.Origin]
	if h == nil || (*h)[0].m.Seq <= r.Seq {
		return false
	}
	c.drop((*h)[0])
	return true
}

// seqHeap holds an origin's waiting signals, the highest sequence on top.
type seqHeap[T any] []*item[T]

func (h seqHeap[T]) Len() int           { return len(h) }
func (h seqHeap[T]) Less(i, j int) bool { return h[i].m.Seq > h[j].m.Seq }
func (h seqHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *seqHeap[T]) Push(x any) {
	it := x.(*item[T])
	it.hidx = len(*h)
	*h = append(*h, it)
}
func (h *seqHeap[T]) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

// drop evicts a waiting signal: it stays known (Pull names it again) and
// is counted.
func (c *Core[T]) drop(top *item[T]) {
	r := top.m.Ref()
	if _, ok := c.refused[r]; !ok && len(c.refused) < maxRefused {
		c.refused[r] = refusal{at: top.arrived, cause: top.causeSet, causeSince: top.causeSince} // its waits go on when it comes back
	}
	c.unhold(r) // what is parked on it or for it finds it gone and skips it
	c.learn(r)
	c.evicted++
	if c.onEvict != nil {
		c.onEvict(r)
	}
}

// Evicted counts the waiting signals dropped to make room for earlier ones.
func (c *Core[T]) Evicted() int64 { return c.evicted }

func laterThan(a, b Meta) bool {
	return cmp.Or(cmp.Compare(a.Lamport, b.Lamport), cmp.Compare(a.Origin, b.Origin), cmp.Compare(a.Seq, b.Seq)) > 0
}

// latestHeap is a max-heap of waiting signals by (Lamport, origin, seq).
// Entries of signals no longer waiting are dropped when they reach the top,
// and the heap is rebuilt from the waiting set when it holds twice as many
// entries.
type latestHeap[T any] struct{ v []*item[T] }

func (h *latestHeap[T]) push(it *item[T], waiting map[Ref]*item[T]) {
	if len(h.v) > 2*len(waiting)+64 {
		h.v = h.v[:0]
		for _, w := range waiting {
			if w != it {
				h.v = append(h.v, w)
			}
		}
		for i := len(h.v)/2 - 1; i >= 0; i-- {
			h.down(i)
		}
	}
	h.v = append(h.v, it)
	for i := len(h.v) - 1; i > 0; {
		p := (i - 1) / 2
		if !laterThan(h.v[i].m, h.v[p].m) {
			break
		}
		h.v[i], h.v[p] = h.v[p], h.v[i]
		i = p
	}
}

// top returns the latest signal still waiting, or nil.
func (h *latestHeap[T]) top(waiting map[Ref]*item[T]) *item[T] {
	for len(h.v) > 0 {
		if it := h.v[0]; waiting[it.m.Ref()] == it {
			return it
		}
		n := len(h.v) - 1
		h.v[0] = h.v[n]
		h.v[n] = nil
		h.v = h.v[:n]
		h.down(0)
	}
	return nil
}

func (h *latestHeap[T]) down(i int) {
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.v) && laterThan(h.v[l].m, h.v[m].m) {
			m = l
		}
		if r < len(h.v) && laterThan(h.v[r].m, h.v[m].m) {
			m = r
		}
		if m == i {
			return
		}
		h.v[i], h.v[m] = h.v[m], h.v[i]
		i = m
	}
}

// waitsBetween reports whether a signal of origin o from..to waits.
func (c *Core[T]) waitsBetween(o string, from, to uint64) bool {
	for r := range c.waiting {
		if r.Origin == o && r.Seq >= from && r.Seq <= to {
			return true
		}
	}
	return false
}

// Decision is what the core gave up for a signal it released: its cause
// (after CauseWait), its named dependencies (after DepWait), or its
// origin's sequences from GapFrom to just before it (after DepWait).
type Decision struct {
	Cause   bool
	Deps    bool
	GapFrom uint64 // 0: none
}

// Zero reports whether nothing was given up.
func (d Decision) Zero() bool { return d == Decision{} }

// Decide hands back a decision the core made before a restart (see
// Release.Decision), so that replaying the journal does not wait again for
// what was given up: when r comes it is released without its cause or its
// undelivered named dependencies, and when Pull reaches GapFrom the hole
// up to r is skipped at once. It reports whether the decision is kept: a
// decision about a signal at or below what was delivered of its origin
// (or below the floor of a forgotten origin, which it does not recall)
// decides nothing, and the caller may delete its record.
func (c *Core[T]) Decide(r Ref, d Decision) bool {
	if d.Zero() || r.Seq == 0 || c.moot(r) {
		return false
	}
	c.recall(r.Origin)
	c.decided[r] = d
	if d.GapFrom > 0 && d.GapFrom < r.Seq {
		c.preSkip[Ref{Origin: r.Origin, Seq: d.GapFrom}] = r.Seq - 1
	}
	c.learn(r)
	return true
}

// Know records that the signal r exists (from a journal listing, say), so
// that Pull and Missing name it until it is delivered.
func (c *Core[T]) Know(r Ref) {
	c.recall(r.Origin)
	c.mark(r)
	if r.Seq > c.listed[r.Origin] {
		c.listed[r.Origin] = r.Seq
	}
	if c.Skipped(r) && len(c.lateKnown) < maxSkipped {
		c.lateKnown[r] = true // Pull names it: read from the journal, it is delivered late
	}
}

// Skipped reports whether r was given up (DepWait) and not delivered
// since: offered, it is delivered late.
func (c *Core[T]) Skipped(r Ref) bool {
	for _, g := range c.skipped[r.Origin] {
		if r.Seq >= g.From && r.Seq <= g.To {
			return true
		}
	}
	return false
}

func (c *Core[T]) learn(r Ref) {
	if r.Seq > c.known[r.Origin] {
		c.known[r.Origin] = r.Seq
	}
}

// mark learns r and notes when: r itself was seen (offered, listed by the
// journal), not only named by another signal's dependencies (a hostile
// signal may name any sequence).
func (c *Core[T]) mark(r Ref) {
	if ms := c.knownAt[r.Origin]; len(ms) == 0 || r.Seq > ms[len(ms)-1].seq {
		c.learn(r)
		if len(ms) >= maxKnownMarks { // keep every other: a later mark answers for the dropped ones (a later time: a longer wait, never a shorter one)
			k := 0
			for i := 1; i < len(ms); i += 2 {
				ms[k] = ms[i]
				k++
			}
			ms = ms[:k]
		}
		c.knownAt[r.Origin] = append(ms, knownMark{seq: r.Seq, at: c.now})
		return
	}
	c.learn(r)
}

// maxKnownMarks bounds the marks of when an origin's sequences became
// known (firstKnown), per origin.
const maxKnownMarks = 64

type knownMark struct {
	seq uint64
	at  int64
}

// firstKnown is when the core first knew that r exists (from a signal,
// a dependency, Know or a journal announcement), at the latest now: a
// signal read from the journal long after the core learnt of it (behind a
// full buffer, after a restart) has been around since then.
func (c *Core[T]) firstKnown(r Ref) int64 {
	ms := c.knownAt[r.Origin]
	for len(ms) > 0 && ms[0].seq <= c.delivered[r.Origin] { // delivered: no longer asked
		ms = ms[1:]
	}
	if len(ms) == 0 {
		delete(c.knownAt, r.Origin)
	} else {
		c.knownAt[r.Origin] = ms
	}
	i, _ := slices.BinarySearchFunc(ms, r.Seq, func(m knownMark, s uint64) int { return cmp.Compare(m.seq, s) })
	if i < len(ms) {
		return min(ms[i].at, c.now)
	}
	return c.now
}

// blocker returns what it waits for first: a dependency (nil, false when
// ready), or its cause (onCause true).
func (c *Core[T]) blocker(it *item[T]) (*Ref, bool) {
	m := &it.m
	if c.delivered[m.Origin] < m.Seq-1 {
		return &Ref{Origin: m.Origin, Seq: m.Seq - 1}, false
	}
	for i := range m.Deps {
		if d := &m.Deps[i]; c.delivered[d.Origin] < d.Seq && !slices.Contains(it.depLost, *d) {
			return d, false // not a copy: one allocation per dependency looked at
		}
	}
	if m.Cause != "" && !it.causeLost && !it.causeLater && !c.causeDelivered(m.Cause, m.CauseSource) {
		for _, w := range c.waitID[m.Cause] {
			if c.p.CauseWait <= 0 && w.Origin == m.Origin && w.Seq > m.Seq && c.waiting[w].m.Source == m.laterSource() { // waits behind it: see Add
				it.causeLater = true
				return nil, false
			}
		}
		return &Ref{}, true
	}
	return nil, false
}

func (c *Core[T]) park(it *item[T], blk *Ref, onCause bool) {
	r := it.m.Ref()
	if onCause {
		if !it.causeSet {
			// CauseWait runs from here, not from arrival (its cause may be
			// on its way behind the predecessor it waited for), but it is
			// owed only a tenth of it more than it has waited since it
			// arrived: effects queued behind one another on causes that
			// never come (their publisher died) are released a tenth of
			// CauseWait apart, not a whole CauseWait each.
			it.causeSince, it.causeSet = max(min(it.arrived, c.firstKnown(r)), c.now-c.p.CauseWait+c.p.CauseWait/10), true
		}
		c.onCause[it.m.Cause] = append(c.onCause[it.m.Cause], r)
		return
	}
	c.onRef[*blk] = append(c.onRef[*blk], r)
}

// release delivers it and everything it unblocks, appending to out.
func (c *Core[T]) release(it *item[T], out []Release[T]) []Release[T] {
	// it is not kept (Add's may live on its stack): only the waiting
	// signals it wakes are queued.
	out = append(out, c.deliver(it))
	queue := c.wake(it, nil)
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		out = append(out, c.deliver(it))
		queue = c.wake(it, queue)
	}
	return out
}

// wake appends to queue the waiting signals that it, just delivered,
// makes ready (parking again those that now wait for something else).
func (c *Core[T]) wake(it *item[T], queue []*item[T]) []*item[T] {
	r := it.m.Ref()
	woken := c.onRef[r]
	delete(c.onRef, r)
	if _, ok := c.preSkip[Ref{Origin: r.Origin, Seq: r.Seq + 1}]; ok { // a hole given up before a restart follows
		if end := c.applyPreSkip(r.Origin, r.Seq+1); end > r.Seq {
			last := Ref{Origin: r.Origin, Seq: end}
			woken = append(woken, c.onRef[last]...)
			delete(c.onRef, last)
		}
	}
	if ws, ok := c.onCause[it.m.ID]; ok {
		woken = append(woken, ws...)
		delete(c.onCause, it.m.ID)
	}
	for _, w := range woken {
		wi := c.waiting[w]
		if wi == nil {
			continue
		}
		if blk, onCause := c.blocker(wi); blk != nil {
			c.park(wi, blk, onCause)
			continue
		}
		c.unhold(w)
		queue = append(queue, wi)
	}
	return queue
}

func (c *Core[T]) deliver(it *item[T]) Release[T] {
	m := &it.m
	delete(c.decided, m.Ref())
	if from, ok := c.afterGap[m.Ref()]; ok {
		delete(c.afterGap, m.Ref())
		it.gapLost, it.gapFrom = true, from
	}
	c.delivered[m.Origin] = max(c.delivered[m.Origin], m.Seq) // never lower (a skip may have passed it: see Late)
	c.learn(m.Ref())
	delete(c.refused, m.Ref())
	// An honest stamp's Lamport time is one more than the highest its
	// publisher had delivered, which is its predecessor's or a named
	// dependency's (the frontier keeps the latest): bound it so, or one
	// hostile time would push every later stamp to the end of the range.
	bound := c.lastLamport[m.Origin]
	for _, d := range m.Deps {
		bound = max(bound, c.lastLamport[d.Origin])
	}
	if len(it.depLost) > 0 || it.gapLost {
		// What it was given up on had a time this core never saw: allow
		// a generous step past everything delivered, still bounded.
		bound = max(bound, c.maxLamport+lostLamportStep)
	}
	lam := m.Lamport
	clamped := lam > bound+1
	if clamped {
		lam = bound + 1
	}
	c.lastLamport[m.Origin] = lam
	c.maxLamport = max(c.maxLamport, lam)
	// A signal naming one delivered after a loss is as late elsewhere as
	// that one (a second origin of a flooding peer would otherwise launder
	// its flood into the frontier).
	depLoss := len(it.depLost) > 0
	for _, d := range m.Deps {
		if l, ok := c.lossOf(d.Origin); ok && d.Seq >= l.from {
			depLoss = true
		}
	}
	if depLoss || it.gapLost {
		l, ok := c.lossOf(m.Origin)
		if !ok {
			l = loss{from: m.Seq}
		}
		l.at, l.dep = c.now, l.dep || depLoss
		c.lost[m.Origin] = l
	}
	c.frontier[m.Origin] = frontierEntry{seq: m.Seq, lamport: lam}
	for _, d := range m.Deps {
		if f, ok := c.frontier[d.Origin]; ok && f.seq <= d.Seq {
			delete(c.frontier, d.Origin)
		}
	}
	var dec Decision
	if it.causeLost || len(it.depLost) > 0 || it.gapLost {
		dec = Decision{Cause: it.causeLost, Deps: len(it.depLost) > 0, GapFrom: it.gapFrom}
	}
	rel := Release[T]{Meta: *m, V: it.v, CauseLost: it.causeLost, CauseLater: it.causeLater, Decision: dec,
		DepLost:        len(it.depLost) > 0 || it.gapLost,
		LamportClamped: clamped && len(it.depLost) == 0 && !it.gapLost} // a lost dependency's time is unknown: not a hostile stamp
	h := bloomline.Hash(m.ID)
	if c.mayHaveHash(h) {
		rel.Dup, rel.Conflict = c.identity(m)
	}
	if !rel.Dup {
		c.rememberHash(m, h)
	}
	return rel
}

// identity reports whether a signal with m's (source, id) was delivered,
// with the same content (dup) or other content (conflict).
func (c *Core[T]) identity(m *Meta) (dup, conflict bool) {
	if rs, ok := c.recent[m.ID]; ok {
		for _, r := range rs {
			if r.source == m.Source {
				if r.digest == m.Digest {
					return true, false
				}
				conflict = true
			}
		}
		// No copy with this content in memory: one may have been evicted
		// from recent before the id was remembered again; ask the Index.
	}
	for _, cp := range c.ix.ByID(m.ID) {
		if cp.Source != m.Source || cp.Ref == m.Ref() || c.upTo(cp.Ref.Origin) < cp.Ref.Seq {
			continue
		}
		if cp.Digest == m.Digest {
			return true, false
		}
		conflict = true
	}
	return false, conflict
}

func (c *Core[T]) causeDelivered(id, source string) bool {
	if !c.mayHave(id) {
		return false
	}
	if rs, ok := c.recent[id]; ok {
		for _, r := range rs {
			if source == "" || r.source == source {
				return true
			}
		}
	}
	copies := c.ix.ByID(id)
	for _, cp := range copies {
		if (source == "" || cp.Source == source) && c.upTo(cp.Ref.Origin) >= cp.Ref.Seq {
			return true
		}
	}
	return len(copies) == 0 && c.p.Gone != nil && c.p.Gone(id)
}

// causeOnItsWay reports whether a copy of it's cause waits in the buffer or
// is in the journal, one that does not follow it in its own origin: the
// cause exists and waits for something itself (often an effect of its own
// origin waiting out its CauseWait on a cause that never comes, or room in
// a full buffer), so it is not given up, until
// three times CauseWait after it arrived (a cycle through dependencies
// would hold it for good).
func (c *Core[T]) causeOnItsWay(it *item[T], now int64) bool {
	if now-it.arrived >= 3*c.p.CauseWait {
		return false
	}
	for _, w := range c.waitID[it.m.Cause] {
		cw := c.waiting[w]
		if cw == nil || (it.m.CauseSource != "" && cw.m.Source != it.m.CauseSource) {
			continue
		}
		if !c.waitsOn(cw, it.m.Ref()) {
			return true
		}
	}
	// Or it is in the journal, not delivered yet: the caller pulls it
	// (behind a full buffer, a catch-up, a lost dependency given up
	// after DepWait).
	return c.causeJournaled(&it.m, it.m.Ref())
}

// causeJournaled reports whether the journal holds a copy of m's cause that
// is neither delivered nor waiting (the caller pulls it), and that follows
// neither m in m's origin nor r in r's.
func (c *Core[T]) causeJournaled(m *Meta, r Ref) bool {
	for _, cp := range c.ix.ByID(m.Cause) {
		if m.CauseSource != "" && cp.Source != m.CauseSource || c.upTo(cp.Ref.Origin) >= cp.Ref.Seq || c.waiting[cp.Ref] != nil ||
			cp.Ref.Origin == m.Origin && cp.Ref.Seq > m.Seq || // a later copy of its own origin follows it
			cp.Ref.Origin == r.Origin && cp.Ref.Seq >= r.Seq {
			continue
		}
		return true
	}
	return false
}

// waitsOn reports whether w waits, through the chain of what each waiting
// signal waits for first, on a signal of r's origin at or after r: a
// cycle (its cause waits for it). A chain it cannot follow counts as no.
func (c *Core[T]) waitsOn(w *item[T], r Ref) bool {
	for range 64 {
		if w.m.Origin == r.Origin && w.m.Seq >= r.Seq {
			return true
		}
		blk, onCause := c.blocker(w)
		if blk == nil {
			return false
		}
		if onCause {
			// Its cause is any copy of the id of the named source: a
			// cycle only if the one copy there is waits on r. A signal of
			// another source is not its cause; a second waiting copy, or
			// a journaled one, may come without r.
			var next *item[T]
			for _, x := range c.waitID[w.m.Cause] {
				cw := c.waiting[x]
				if cw == nil || w.m.CauseSource != "" && cw.m.Source != w.m.CauseSource {
					continue
				}
				if next != nil {
					return false
				}
				next = cw
			}
			if next == nil || c.causeJournaled(&w.m, r) {
				return false
			}
			w = next
			continue
		}
		if blk.Origin == r.Origin && blk.Seq >= r.Seq {
			return true
		}
		if w = c.waiting[*blk]; w == nil {
			return false
		}
	}
	return false
}

// laterSource is the source a later signal of m's own origin must have to
// be m's cause (see Add): the cause's source when m names it, else m's own.
func (m *Meta) laterSource() string {
	if m.CauseSource != "" {
		return m.CauseSource
	}
	return m.Source
}

// Weak reports whether a signal delivered outside the core (a Weak one:
// no stamp, no order) repeats an identity with the same content that the
// core remembers (then it is a retry: do not deliver it again), and
// remembers it otherwise. It is not a cause (see Note).
func (c *Core[T]) Weak(source, id string, digest uint64) (dup bool) {
	if c.mayHave(id) {
		for _, r := range c.recent[id] {
			if r.source == source && r.digest == digest {
				return true
			}
		}
	}
	c.remember(&Meta{Source: source, ID: id, Digest: digest})
	return false
}

// Note records that a signal with this identity was delivered outside the
// core (a Weak signal), so that it counts as a cause, and returns what that
// releases: the signals that waited for it as their cause, in causal order.
func (c *Core[T]) Note(source, id string, digest uint64) []Release[T] {
	c.remember(&Meta{Source: source, ID: id, Digest: digest})
	return c.wakeCause(id, nil)
}

// wakeCause looks again at the signals that wait for id as their cause.
func (c *Core[T]) wakeCause(id string, out []Release[T]) []Release[T] {
	ws := c.onCause[id]
	delete(c.onCause, id)
	for _, w := range ws {
		if it := c.waiting[w]; it != nil {
			out = c.recheck(it, out)
		}
	}
	return out
}

// recheck looks again at a waiting signal whose wait may be over: it is
// parked on what it waits for now, or released with what it unblocks.
func (c *Core[T]) recheck(it *item[T], out []Release[T]) []Release[T] {
	if blk, onCause := c.blocker(it); blk != nil {
		c.park(it, blk, onCause)
		return out
	}
	c.unhold(it.m.Ref())
	return c.release(it, out)
}

func (c *Core[T]) remember(m *Meta) { c.rememberHash(m, bloomline.Hash(m.ID)) }

// rememberHash is remember given the bloomline.Hash of m's id.
//
// It keeps copies of m's id and source: a decoded signal's strings share
// its text (signalmesh.DecodeBinary), which a kept id would keep as long as
// the ring does, up to Recent whole signals. A store to an existing key
// replaces the key too, so the id is copied there as well.
func (c *Core[T]) rememberHash(m *Meta, h uint64) {
	c.bloomAdd(h)
	r := recentID{c.source(m.Source), m.Digest}
	if rs, ok := c.recent[m.ID]; ok {
		c.recent[strings.Clone(m.ID)] = append(rs, r)
		return
	}
	if old := c.ring[c.next]; old != "" {
		delete(c.recent, old)
	}
	id := strings.Clone(m.ID)
	c.ring[c.next] = id
	c.next = (c.next + 1) % len(c.ring)
	if len(c.slab) == 0 {
		c.slab = make([]recentID, 1024)
	}
	rs := c.slab[:1:1] // a piece of a shared array: one allocation per 1,024 ids, freed as the ring moves on
	c.slab = c.slab[1:]
	rs[0] = r
	c.recent[id] = rs
}

// source returns a copy of s that the core may keep (see rememberHash),
// shared by the identities with that source: of the first 1,024 sources
// it sees, one copy each.
func (c *Core[T]) source(s string) string {
	if v, ok := c.sources[s]; ok {
		return v
	}
	s = strings.Clone(s)
	if len(c.sources) < 1024 {
		c.sources[s] = s
	}
	return s
}

// Tick releases the signals that have waited for their cause for
// Params.CauseWait or longer at time now (marked CauseLost), and those that
// have waited Params.DepWait for a dependency nobody has (DepLost), with
// what they unblock.
func (c *Core[T]) Tick(now int64) []Release[T] {
	c.now = max(c.now, now)
	var out []Release[T]
	if c.p.DepWait > 0 && now-c.depScan >= max(c.p.DepWait/8, 1) {
		c.depScan = now
		out = c.giveUpDeps(now, out)
	}
	if c.p.CauseWait == 0 || len(c.onCause) == 0 {
		return out
	}
	for _, id := range slices.Sorted(maps.Keys(c.onCause)) {
		// Take the list out first: a release below may deliver id (waking
		// what is parked on it) or park more signals on it.
		rs := c.onCause[id]
		delete(c.onCause, id)
		for _, r := range rs {
			it := c.waiting[r]
			if it == nil {
				continue
			}
			blk, onCause := c.blocker(it)
			if blk != nil && (!onCause || now-it.causeSince < c.p.CauseWait || c.causeOnItsWay(it, now)) {
				c.park(it, blk, onCause)
				continue
			}
			// It waited on its cause, so everything else it needs is
			// delivered: without the cause it is ready.
			it.causeLost = blk != nil
			c.unhold(r)
			out = c.release(it, out)
		}
	}
	return out
}

// giveUpDeps releases the waiting signals that have waited DepWait or
// longer for a dependency that is neither delivered, nor waiting, nor in
// the journal (lost with the peers that had it). A missing previous signal
// of the origin is given up only for the lowest waiting signal of that
// origin, so that no waiting signal is skipped over; the skipped sequences
// stay deliverable (Late).
func (c *Core[T]) giveUpDeps(now int64, out []Release[T]) []Release[T] {
	jr := map[Ref]bool{} // Journaled answers, once per scan
	journaled := func(r Ref) bool {
		v, ok := jr[r]
		if !ok {
			v = c.ix.Journaled(r)
			jr[r] = v
		}
		return v
	}
	c.prune()
	out = c.skipHoles(now, out, journaled)
	// Each origin's waiting signals in sequence, once: a missing
	// predecessor is given up only for the lowest waiting one of its
	// origin (no waiting signal is skipped over); the ones after it follow
	// in the same walk.
	byOrigin := map[string][]*item[T]{}
	for _, it := range c.waiting {
		byOrigin[it.m.Origin] = append(byOrigin[it.m.Origin], it)
	}
	for _, o := range slices.Sorted(maps.Keys(byOrigin)) {
		its := byOrigin[o]
		slices.SortFunc(its, func(a, b *item[T]) int { return cmp.Compare(a.m.Seq, b.m.Seq) })
		for _, it := range its {
			r := it.m.Ref()
			if c.waiting[r] != it {
				continue // released above
			}
			blk, onCause := c.blocker(it)
			if blk == nil { // ready: what it waited on was given up above
				c.unhold(r)
				out = c.release(it, out)
				continue
			}
			if onCause {
				continue // its cause: CauseWait (Tick)
			}
			if blk.Origin == o && c.waiting[*blk] != nil {
				break // behind a waiting predecessor: the rest of the origin too
			}
			// A refused (or evicted) signal is on its way while the
			// journal holds it (pulled when there is room), and for
			// DepWait from its arrival otherwise (sent again, or lost:
			// one only gossiped held the signals after it for good).
			f, refused := c.refused[*blk]
			refused = refused && now-f.at < c.p.DepWait
			if now-it.arrived < c.p.DepWait || c.waiting[*blk] != nil || refused || journaled(*blk) {
				if blk.Origin == o {
					break // its predecessor is on its way (refused, journaled) or not due: so are the rest
				}
				continue // a named dependency on its way, or not due yet
			}
			if blk.Origin == o {
				it.gapLost, it.gapFrom = true, c.delivered[o]+1
				c.skip(Gap{Origin: o, From: it.gapFrom, To: r.Seq - 1})
			} else {
				it.depLost = append(it.depLost, *blk)
			}
			if ws := slices.DeleteFunc(c.onRef[*blk], func(w Ref) bool { return w == r }); len(ws) == 0 {
				delete(c.onRef, *blk) // given up: nothing left to wake there
			} else {
				c.onRef[*blk] = ws
			}
			out = c.recheck(it, out)
		}
	}
	return out
}

// prune drops what delivery or give-ups made moot: dependencies at or
// below what is delivered (their waiters are woken at the next release or
// scan) and refusals of signals no longer undelivered.
func (c *Core[T]) prune() {
	for r, ws := range c.onRef {
		if c.delivered[r.Origin] >= r.Seq {
			delete(c.onRef, r)
			for _, w := range ws {
				if it := c.waiting[w]; it != nil {
					if blk, onCause := c.blocker(it); blk != nil {
						c.park(it, blk, onCause)
					}
					// else: ready; the walk of giveUpDeps releases it
				}
			}
		}
	}
	for r := range c.refused {
		if c.delivered[r.Origin] >= r.Seq {
			delete(c.refused, r)
		}
	}
}

// lostLamportStep is how far past every delivered Lamport time a signal
// released without a dependency may be (its dependency's time is unknown).
const lostLamportStep = 1 << 20

// maxHoleProbe bounds how far past a hole skipHoles looks for the next
// signal of its origin in the journal.
const maxHoleProbe = 4096

// skipHoles gives up a hole in an origin's journal: the next signal Pull
// names is neither waiting nor journaled, a later one is journaled, and it
// has been so for DepWait (a signal lost with a killed publisher, whose
// later signals another peer delivered and journaled). Pull reads an
// origin in sequence and stops at a hole, so without this the signals
// after it, journaled, would never be offered (after a restart, say).
func (c *Core[T]) skipHoles(now int64, out []Release[T], journaled func(Ref) bool) []Release[T] {
	lowest := map[string]uint64{}
	for r := range c.waiting {
		if l, ok := lowest[r.Origin]; !ok || r.Seq < l {
			lowest[r.Origin] = r.Seq
		}
	}
	for _, r := range c.Pull() {
		if journaled(r) {
			delete(c.holes, r.Origin)
			continue
		}
		if f, refused := c.refused[r]; refused && now-f.at < c.p.DepWait {
			continue // it exists: pulled when there is room, or sent again
		}
		// What lies past the hole: a waiting signal of the origin, or, for
		// an origin the journal listed (Know), a journaled one close by. A
		// hole named only by dependencies (perhaps a hostile one's) is not
		// probed: nothing waits behind it but those dependents, which
		// DepWait gives up on their own.
		next := lowest[r.Origin]
		if next == 0 && c.listed[r.Origin] > r.Seq {
			for q := r.Seq + 1; q <= c.listed[r.Origin] && q-r.Seq <= maxHoleProbe; q++ {
				if journaled(Ref{Origin: r.Origin, Seq: q}) {
					next = q
					break
				}
			}
		}
		if next == 0 {
			delete(c.holes, r.Origin)
			continue
		}
		h, ok := c.holes[r.Origin]
		if !ok || h.seq != r.Seq {
			c.holes[r.Origin] = hole{seq: r.Seq, since: now} // its wait starts when something is found behind it
			continue
		}
		if now-h.since < c.p.DepWait {
			continue
		}
		nx := Ref{Origin: r.Origin, Seq: next}
		c.skip(Gap{Origin: r.Origin, From: r.Seq, To: next - 1})
		delete(c.holes, r.Origin)
		if len(c.afterGap) < maxSkipped {
			c.afterGap[nx] = r.Seq
		}
		if it := c.waiting[nx]; it != nil { // it waited on the hole
			out = c.recheck(it, out)
		}
	}
	return out
}

type hole struct {
	seq   uint64
	since int64
}

// refusal is what the core remembers of a refused or evicted signal.
type refusal struct {
	at         int64 // when it first arrived
	cause      bool  // its CauseWait had begun
	causeSince int64 // when
}

// maxRefused bounds the refusals remembered (a large catch-up refuses
// many): past it, a refused signal's waits count from when it gets in.
const maxRefused = 1 << 16

// maxSkipped bounds the given-up ranges remembered for late delivery; past
// it the oldest is forgotten (a signal of it that turns up is a duplicate).
const maxSkipped = 4096

// skip gives up g: its origin counts as delivered past it, and a signal of
// it that turns up later is delivered late.
func (c *Core[T]) skip(g Gap) {
	g.From = max(g.From, c.delivered[g.Origin]+1) // never below what is delivered
	if g.From > g.To {
		return
	}
	c.delivered[g.Origin] = g.To
	c.skipped[g.Origin] = append(c.skipped[g.Origin], g)
	c.skipRing = append(c.skipRing, g)
	if len(c.skipRing) > maxSkipped {
		old := c.skipRing[0]
		c.skipRing = c.skipRing[1:]
		gs := slices.DeleteFunc(c.skipped[old.Origin], func(x Gap) bool { return x.From >= old.From && x.To <= old.To }) // its pieces
		if len(gs) == 0 {
			delete(c.skipped, old.Origin)
		} else {
			c.skipped[old.Origin] = gs
		}
	}
}

// unskip reports whether r was given up (and is no longer): it is
// delivered late.
func (c *Core[T]) unskip(r Ref) bool {
	gs := c.skipped[r.Origin]
	for i, g := range gs {
		if r.Seq < g.From || r.Seq > g.To {
			continue
		}
		var rest []Gap
		if g.From < r.Seq {
			rest = append(rest, Gap{r.Origin, g.From, r.Seq - 1})
		}
		if r.Seq < g.To {
			rest = append(rest, Gap{r.Origin, r.Seq + 1, g.To})
		}
		gs = slices.Replace(gs, i, i+1, rest...)
		if len(gs) == 0 {
			delete(c.skipped, r.Origin)
			if l, ok := c.lost[r.Origin]; ok && !l.dep { // its order is whole again: it may be named
				delete(c.lost, r.Origin)
			}
		} else {
			c.skipped[r.Origin] = gs
		}
		return true
	}
	return false
}

// deliverLate delivers a signal whose place was given up: its origin's
// order, its frontier and Lamport time are past it; only its identity is
// checked and remembered.
func (c *Core[T]) deliverLate(it *item[T]) Release[T] {
	m := &it.m
	rel := Release[T]{Meta: *m, V: it.v, Late: true}
	if c.mayHave(m.ID) {
		rel.Dup, rel.Conflict = c.identity(m)
	}
	if !rel.Dup {
		c.remember(m)
	}
	return rel
}

// Pull names, per origin, the next signal the core lacks although it knows
// it exists (a signal refused with ErrFull, one that a delivered or waiting
// signal depends on, or one given to Know): the caller reads it, and the
// ones after it, from the journal and offers them with Add, until one is
// missing or refused. Sorted by origin.
func (c *Core[T]) Pull() []Ref {
	var out []Ref
	for _, o := range slices.Sorted(maps.Keys(c.known)) { // in order: applyPreSkip changes state
		k := c.known[o]
		next := c.delivered[o] + 1
		if _, ok := c.preSkip[Ref{Origin: o, Seq: next}]; ok { // given up before a restart
			next = c.applyPreSkip(o, next) + 1
		}
		if k < next {
			continue
		}
		if _, ok := c.waiting[Ref{o, next}]; ok {
			continue
		}
		out = append(out, Ref{o, next})
	}
	for r := range c.lateKnown {
		if !c.Skipped(r) {
			delete(c.lateKnown, r)
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Ref) int { return cmp.Or(cmp.Compare(a.Origin, b.Origin), cmp.Compare(a.Seq, b.Seq)) })
	return out
}

// applyPreSkip applies the hole given up before a restart that starts at
// from: it is skipped up to the first signal in it that waits here (that
// one is delivered in its place, and the rest of the hole is given up
// after it). It returns the last sequence skipped (from-1: none).
func (c *Core[T]) applyPreSkip(o string, from uint64) uint64 {
	to, ok := c.preSkip[Ref{Origin: o, Seq: from}]
	if !ok {
		return from - 1
	}
	delete(c.preSkip, Ref{Origin: o, Seq: from})
	var w uint64
	for r := range c.waiting {
		if r.Origin == o && r.Seq >= from && r.Seq <= to && (w == 0 || r.Seq < w) {
			w = r.Seq
		}
	}
	end := to
	if w != 0 {
		end = w - 1
		if w < to {
			c.preSkip[Ref{Origin: o, Seq: w + 1}] = to
		}
	}
	if end < from {
		return from - 1
	}
	c.skip(Gap{Origin: o, From: from, To: end})
	if len(c.afterGap) < maxSkipped {
		c.afterGap[Ref{Origin: o, Seq: end + 1}] = from
	}
	return end
}

// Delivered returns the highest delivered sequence of each origin.
func (c *Core[T]) Delivered() map[string]uint64 { return maps.Clone(c.delivered) }

// Settled is the sequence up to which every signal of origin was
// delivered, none given up on (a given-up signal may still be delivered
// late): Delivered's, or less when a range was skipped.
func (c *Core[T]) Settled(origin string) uint64 {
	s := c.delivered[origin]
	for _, g := range c.skipped[origin] {
		s = min(s, g.From-1)
	}
	return s
}

// DeliveredOf is the highest delivered sequence of origin.
func (c *Core[T]) DeliveredOf(origin string) uint64 { return c.delivered[origin] }

// Len is the number of waiting signals.
func (c *Core[T]) Len() int { return len(c.waiting) }

// Frontier is what a signal published now depends on: the delivered
// signals that no later delivered signal names, except self's own (a
// signal depends on its origin's previous one anyway), at most max of
// them (the latest by Lamport time), sorted by origin; and the Lamport
// time the next signal must exceed. truncated counts what was left out.
//
// It names no signal of an origin that, within 2×DepWait, had a signal
// delivered without something given up (a hole in its order, a named
// dependency, or a named signal so delivered), from that signal on, until
// then or until its holes are filled (when only holes were given up):
// every replica gives those up only after DepWait, so a signal naming one
// would wait that long everywhere behind it. A peer that floods signals
// that never become ready (their predecessors do not exist) would
// otherwise tie every honest signal published after one of them was
// delivered to the flood: they would wait behind it wherever it waits, and
// in a small buffer it can fill, for good. The order such a signal's
// delivery implies is lost with it (another replica may deliver what is
// published now before it); a causeid on it still holds. Past 2×DepWait an
// origin that lost a named dependency is named again; one with a hole
// given up is not, while the hole is given up (until it is filled, or
// forgotten among the last 4,096 give-ups): a flood whose sequence skips
// numbers would otherwise be named again as soon as it paused, while a
// replica with a small buffer still works through its holes, and every
// signal published then would wait behind it there (the fault harness's
// CI run, seed 1: a probe never delivered). An honest origin that lost a
// signal for good is so left out too: what its later signals caused is
// ordered by causeid only.
//
// The Lamport time is the highest of the heads it may name (the ones left
// out by max are below the ones named) and of self's own last signal, not
// of everything delivered: a stamp above what it names would exceed the
// bound every replica sets (see Release.LamportClamped).
func (c *Core[T]) Frontier(self string, max int) (deps []Ref, lamport uint64, truncated int) {
	all := c.frontierScratch[:0] // not returned: kept for the next call (a node asks after every delivery)
	for o, f := range c.frontier {
		if _, lossy := c.lossOf(o); o != self && !lossy && len(c.skipped[o]) == 0 {
			all = append(all, originFrontier{o, f})
		}
	}
	lamport = c.lastLamport[self]
	for _, f := range all {
		if f.lamport > lamport {
			lamport = f.lamport
		}
	}
	if max < 0 {
		max = 0
	}
	if len(all) > max {
		slices.SortFunc(all, func(a, b originFrontier) int {
			return cmp.Or(cmp.Compare(b.lamport, a.lamport), cmp.Compare(a.o, b.o))
		})
		truncated = len(all) - max
		all = all[:max]
	}
	deps = make([]Ref, len(all))
	for i, f := range all {
		deps[i] = Ref{f.o, f.seq}
	}
	c.frontierScratch = all[:0]
	slices.SortFunc(deps, func(a, b Ref) int { return cmp.Compare(a.Origin, b.Origin) })
	return deps, lamport, truncated
}

// originFrontier is an origin's frontier entry, as Frontier lists them.
type originFrontier struct {
	o string
	frontierEntry
}

// lossOf returns o's loss mark while it holds (see loss).
func (c *Core[T]) lossOf(o string) (loss, bool) {
	l, ok := c.lost[o]
	if ok && c.p.DepWait > 0 && c.now-l.at >= lossHold*c.p.DepWait {
		return loss{}, false
	}
	return l, ok
}

// Missing reports what waiting signals need and the core has not seen:
// per origin, the sequence ranges between what was delivered and the
// highest known that are neither delivered nor waiting; and the cause ids
// that waiting signals wait for. Both sorted.
func (c *Core[T]) Missing() (gaps []Gap, causes []string) {
	held := map[string][]uint64{}
	for r := range c.waiting {
		held[r.Origin] = append(held[r.Origin], r.Seq)
	}
	for _, o := range slices.Sorted(maps.Keys(c.known)) {
		from, to := c.delivered[o]+1, c.known[o]
		seqs := held[o]
		slices.Sort(seqs)
		for _, s := range seqs {
			if s > from {
				gaps = append(gaps, Gap{o, from, s - 1})
			}
			from = s + 1
		}
		if from <= to {
			gaps = append(gaps, Gap{o, from, to})
		}
	}
	causes = slices.Sorted(maps.Keys(c.onCause))
	return gaps, causes
}

func (c *Core[T]) bloomPos(h uint64, f func(w int, bit uint64)) {
	for _, x := range bloomline.Slots(h, len(c.bloom)) {
		f(x.Word, x.Bit)
	}
}

// bloomAdd adds the id whose bloomline.Hash is h.
func (c *Core[T]) bloomAdd(h uint64) {
	c.bloomPos(h, func(w int, bit uint64) { c.bloom[w] |= bit })
}

func (c *Core[T]) mayHave(id string) bool { return c.mayHaveHash(bloomline.Hash(id)) }

// mayHaveHash is mayHave of the id whose bloomline.Hash is h.
func (c *Core[T]) mayHaveHash(h uint64) bool {
	all := true
	c.bloomPos(h, func(w int, bit uint64) { all = all && c.bloom[w]&bit != 0 })
	return all
}
