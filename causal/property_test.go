package causal

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The property test: random histories, delivered to a Core in random
// interleavings (duplicates, reorders, a small Limit with ErrFull drops
// recovered by a Pull loop over the journal, Ticks and restarts), checked
// against the simplest possible reference model of causal delivery:
//
//   - a signal may be released once its origin predecessor and its direct
//     dependencies were released, and its cause (any signal in the history
//     with that id) was released, unless it is released with CauseLost, which
//     needs the cause not released and CauseWait passed since its Add;
//   - each signal is released exactly once (Dup is a flag, not a drop);
//   - Dup iff an earlier release had the same (source, id, digest); Conflict
//     iff not Dup and an earlier release had the same (source, id);
//   - at the end (everything fed, Pull loop, Ticks past CauseWait) all are
//     released, Len() is 0 and Missing() is empty.
//
// Figures: CAUSAL_PROP_CASES and CAUSAL_PROP_INTERLEAVINGS set the numbers
// (default 2,000 x 50 = 100,000 interleavings, fewer under -race or -short);
// CAUSAL_PROP_SEED replays one case seed.

// history is what the mesh published: signals, in publish order.
type history struct {
	sigs   []Meta
	byRef  map[Ref]Meta
	byID   map[string][]int // id -> indexes in sigs
	params Params
}

// genHistory makes origins publish signals; each origin's replica delivers
// (a causally closed set of) what was published before it publishes.
func genHistory(rng *rand.Rand) *history {
	h := &history{byRef: map[Ref]Meta{}, byID: map[string][]int{}}
	h.params = Params{
		Limit:     1 + rng.IntN(4),
		CauseWait: []int64{0, 5, 20, 60}[rng.IntN(4)],
		Recent:    []int{1, 2, 4, 1 << 10}[rng.IntN(4)],
		BloomBits: []int{64, 256, 1 << 12}[rng.IntN(3)],
	}
	if rng.IntN(4) == 0 {
		h.params.Limit = 64
	}
	if rng.IntN(3) == 0 { // per-origin shares, and the heaviest origin evicted for another
		h.params.OriginLimit = 1 + rng.IntN(h.params.Limit)
	}
	nOrig := 2 + rng.IntN(4)
	n := 5 + rng.IntN(25)
	origins := make([]string, nOrig)
	for i := range origins {
		origins[i] = string(rune('A' + i))
	}
	// seen[o]: the replica of o has delivered these (indexes into sigs).
	seen := make([]map[int]bool, nOrig)
	for i := range seen {
		seen[i] = map[int]bool{}
	}
	seq := make([]uint64, nOrig)
	lam := make([]uint64, nOrig)
	var closeOver func(o, i int)
	closeOver = func(o, i int) { // deliver sigs[i] and what it needs on o
		if seen[o][i] {
			return
		}
		seen[o][i] = true
		m := h.sigs[i]
		need := append([]Ref{}, m.Deps...)
		if m.Seq > 1 {
			need = append(need, Ref{m.Origin, m.Seq - 1})
		}
		for _, d := range need {
			closeOver(o, h.index(d))
		}
		if m.Cause != "" && m.Cause != m.ID {
			for _, j := range h.byID[m.Cause] {
				if j < i { // a cause from the past; else the replica waited it out
					closeOver(o, j)
					break
				}
			}
		}
		lam[o] = max(lam[o], m.Lamport)
	}
	for k := range n {
		o := rng.IntN(nOrig)
		// the replica catches up on some of what was published
		for range rng.IntN(3) {
			if k > 0 {
				closeOver(o, rng.IntN(k))
			}
		}
		seq[o]++
		lam[o]++
		m := Meta{Origin: origins[o], Stamp: Stamp{Seq: seq[o], Lamport: lam[o]},
			Source: "s", ID: "e" + strconv.Itoa(k), Digest: uint64(k)}
		// deps: a random subset of what o delivered from other origins
		for _, i := range slices.Sorted(maps.Keys(seen[o])) { // sorted: a seed is one history
			if h.sigs[i].Origin != m.Origin && rng.IntN(3) == 0 && len(m.Deps) < 4 {
				m.Deps = append(m.Deps, h.sigs[i].Ref())
			}
		}
		switch x := rng.IntN(20); {
		case x < 4 && k > 0: // a cause published before, maybe not delivered here
			m.Cause = "e" + strconv.Itoa(rng.IntN(k))
		case x == 4 && h.params.CauseWait > 0: // a cause published later, maybe a cycle
			m.Cause = "e" + strconv.Itoa(k+1+rng.IntN(3))
		case x == 5 && h.params.CauseWait > 0: // a cause that never exists
			m.Cause = "ghost" + strconv.Itoa(k)
		}
		// a retry of an identity, published on another origin
		if k > 0 && rng.IntN(6) == 0 {
			j := rng.IntN(k)
			if h.sigs[j].Origin != m.Origin {
				m.Source, m.ID = h.sigs[j].Source, h.sigs[j].ID
				if rng.IntN(2) == 0 {
					m.Digest = h.sigs[j].Digest
				}
				if m.Cause == m.ID {
					m.Cause = ""
				}
			}
		} else if k > 0 && rng.IntN(12) == 0 { // same id, another source
			j := rng.IntN(k)
			m.Source, m.ID = "t", h.sigs[j].ID
			if m.Cause == m.ID {
				m.Cause = ""
			}
		}
		h.sigs = append(h.sigs, m)
		h.byRef[m.Ref()] = m
		h.byID[m.ID] = append(h.byID[m.ID], k)
		closeOver(o, k)
	}
	// drop causes on ids "published later" that were not
	for i := range h.sigs {
		m := &h.sigs[i]
		if m.Cause != "" && strings.HasPrefix(m.Cause, "e") && len(h.byID[m.Cause]) == 0 && h.params.CauseWait == 0 {
			m.Cause = ""
		}
		h.byRef[m.Ref()] = *m
	}
	return h
}

func (h *history) index(r Ref) int {
	m := h.byRef[r]
	for _, i := range h.byID[m.ID] {
		if h.sigs[i].Ref() == r {
			return i
		}
	}
	panic("no " + r.String())
}

func (h *history) journal() *journal {
	j := newJournal()
	for _, m := range h.sigs {
		j.put(m)
	}
	return j
}

// model is the reference: what was released so far, and checks on each
// release. It knows nothing of the core's structures.
type model struct {
	h        *history
	released map[Ref]bool
	order    []Meta        // all releases (not replays), in order
	offerAt  map[Ref]int64 // first offered to this core (a restart clears it)
	waiting  map[Ref]bool  // Add returned no error and it was not released yet
	offered  map[Ref]bool  // given to Add, whatever the answer
	// laterCause: released CauseLater -> the later signal of its origin
	// that is its cause (a restart must offer it again to release it)
	laterCause map[Ref]Meta
}

func (md *model) causeReleased(id string) bool {
	for _, i := range md.h.byID[id] {
		if md.released[md.h.sigs[i].Ref()] {
			return true
		}
	}
	return false
}

func (md *model) check(rel Release[int], now int64) error {
	m := rel.Meta
	r := m.Ref()
	want, ok := md.h.byRef[r]
	if !ok {
		return fmt.Errorf("released %v, not in the history", r)
	}
	if md.released[r] {
		return fmt.Errorf("released %v twice", r)
	}
	if m.Seq > 1 && !md.released[Ref{m.Origin, m.Seq - 1}] {
		return fmt.Errorf("released %v before its predecessor", r)
	}
	for _, d := range want.Deps {
		if !md.released[d] {
			return fmt.Errorf("released %v before its dependency %v", r, d)
		}
	}
	if c := want.Cause; c != "" && c != want.ID {
		later := false // the cause is a later signal of the same origin: not a dependency
		for _, i := range md.h.byID[c] {
			if o := md.h.sigs[i]; o.Origin == m.Origin && o.Seq > m.Seq && o.Source == m.Source {
				later = true
			}
		}
		switch {
		case rel.CauseLater && !later:
			return fmt.Errorf("released %v CauseLater, but no later signal of its origin is its cause %q", r, c)
		case rel.CauseLater:
			var first Meta
			for _, i := range md.h.byID[c] {
				if o := md.h.sigs[i]; o.Origin == m.Origin && o.Seq > m.Seq && o.Source == m.Source && (first.Seq == 0 || o.Seq < first.Seq) {
					first = o
				}
			}
			md.laterCause[r] = first
		case !rel.CauseLost && !md.causeReleased(c):
			return fmt.Errorf("released %v before its cause %q", r, c)
		case rel.CauseLost && md.causeReleased(c):
			return fmt.Errorf("released %v CauseLost, but its cause %q was released", r, c)
		case rel.CauseLost && (md.h.params.CauseWait == 0 || now-md.offerAt[r] < md.h.params.CauseWait/10):
			// CauseWait counts from when the core first knew of the signal
			// (it may have been named long before it was offered), but a
			// signal is owed at least a tenth of it after it is offered.
			return fmt.Errorf("released %v CauseLost at %d, offered at %d, CauseWait %d", r, now, md.offerAt[r], md.h.params.CauseWait)
		}
	} else if rel.CauseLost {
		return fmt.Errorf("released %v CauseLost without a cause", r)
	}
	var dup, conflict bool
	for _, p := range md.order {
		if p.Source == want.Source && p.ID == want.ID {
			if p.Digest == want.Digest {
				dup = true
			} else {
				conflict = true
			}
		}
	}
	conflict = conflict && !dup
	if rel.Dup != dup || rel.Conflict != conflict {
		return fmt.Errorf("released %v (%s/%s) with Dup=%v Conflict=%v, model says %v %v", r, want.Source, want.ID, rel.Dup, rel.Conflict, dup, conflict)
	}
	md.released[r] = true
	delete(md.waiting, r)
	md.order = append(md.order, want)
	return nil
}

type propStats struct {
	adds, full, dups, pulls, restarts, lost, dupFlags, conflicts int
}

// runInterleaving delivers h to a core in one random interleaving and
// checks it against the model.
func runInterleaving(h *history, rng *rand.Rand, st *propStats) error {
	j := h.journal()
	newCore := func() *Core[int] {
		c, err := New[int](h.params, j)
		if err != nil {
			panic(err)
		}
		return c
	}
	c := newCore()
	md := &model{h: h, released: map[Ref]bool{}, offerAt: map[Ref]int64{}, waiting: map[Ref]bool{}, offered: map[Ref]bool{}, laterCause: map[Ref]Meta{}}
	c.onEvict = func(r Ref) { delete(md.waiting, r) } // evicted: as if refused, Pull names it again
	var now int64
	take := func(rels []Release[int]) error {
		for _, rel := range rels {
			if err := md.check(rel, now); err != nil {
				return err
			}
			if rel.CauseLost {
				st.lost++
			}
			if rel.Dup {
				st.dupFlags++
			}
			if rel.Conflict {
				st.conflicts++
			}
		}
		if c.Len() > h.params.Limit {
			return fmt.Errorf("Len %d > Limit %d", c.Len(), h.params.Limit)
		}
		return nil
	}
	add := func(m Meta) (bool, error) {
		st.adds++
		r := m.Ref()
		md.offered[r] = true
		if _, ok := md.offerAt[r]; !ok {
			md.offerAt[r] = now
		}
		was := md.released[r] || md.waiting[r]
		rels, err := c.Add(m, 0, now)
		switch {
		case errors.Is(err, ErrDuplicate):
			st.dups++
			if !was {
				return false, fmt.Errorf("Add %v: ErrDuplicate, neither released nor waiting", r)
			}
			return false, nil
		case was:
			return false, fmt.Errorf("Add %v: %v, want ErrDuplicate", r, err)
		case errors.Is(err, ErrFull):
			st.full++
			if c.Len() != h.params.Limit && (h.params.OriginLimit == 0 || c.perOrigin[r.Origin] < h.params.OriginLimit) {
				return false, fmt.Errorf("Add %v: ErrFull with Len %d, Limit %d, %d of its origin waiting (OriginLimit %d)",
					r, c.Len(), h.params.Limit, c.perOrigin[r.Origin], h.params.OriginLimit)
			}
			return false, nil
		case err != nil:
			return false, fmt.Errorf("Add %v: %v", r, err)
		}
		md.waiting[r] = true
		return true, take(rels)
	}
	pullLoop := func() error {
		st.pulls++
		for {
			progress := false
			for _, r := range c.Pull() {
				if md.released[r] || md.waiting[r] {
					return fmt.Errorf("Pull names %v, released or waiting", r)
				}
				for ; ; r.Seq++ {
					m, ok := h.byRef[r]
					if !ok {
						break
					}
					ok, err := add(m)
					if err != nil {
						return err
					}
					if !ok {
						break
					}
					progress = true
				}
			}
			if !progress {
				return nil
			}
		}
	}
	restart := func() error {
		st.restarts++
		// The node re-feeds what it dispatched, in dispatch order, with
		// dispatch off; a signal it released CauseLost waits again, so the
		// node replays that decision with a Tick at CauseWait.
		received := map[Ref]bool{}
		for r := range md.offered {
			if !md.released[r] {
				received[r] = true
			}
		}
		c = newCore()
		replayed := 0
		var extra []Meta
		readded := map[Ref]bool{}
		c.onEvict = func(r Ref) { delete(md.waiting, r); delete(readded, r) }
		inOrder := map[Ref]bool{}
		for _, m := range md.order {
			inOrder[m.Ref()] = true
		}
		count := func(rels []Release[int]) {
			for _, rel := range rels {
				if inOrder[rel.Meta.Ref()] {
					replayed++
				} else { // a later cause offered again below, now delivered (to no one, as a node's restart does)
					md.released[rel.Meta.Ref()] = true
					delete(md.waiting, rel.Meta.Ref())
					extra = append(extra, md.h.byRef[rel.Meta.Ref()])
				}
			}
		}
		for _, m := range md.order { // time only moves forward, also across a restart
			rels, err := c.Add(m, 0, now)
			if errors.Is(err, ErrFull) {
				continue // no room now: pulled below, as a node's restart does
			}
			if err != nil && !errors.Is(err, ErrDuplicate) {
				return fmt.Errorf("replay %v: %v", m.Ref(), err)
			}
			count(rels)
			if lc, ok := md.laterCause[m.Ref()]; ok && c.Len() > 0 { // the journal holds it: the node reads it again
				rels, err := c.Add(lc, 0, now)
				if err == nil && !md.released[lc.Ref()] {
					readded[lc.Ref()] = true
				}
				count(rels)
			}
			if c.Len() > 0 && h.params.CauseWait > 0 {
				now += h.params.CauseWait
				count(c.Tick(now))
			}
		}
		// pull what was refused, from the journal, ticking as a node does
		for progress, rounds := true, 0; (progress || len(c.Pull()) > 0 || c.Len() > 0) && rounds < 4*len(md.order)+4; rounds++ {
			progress = false
			for _, r := range c.Pull() {
				if m, ok := md.h.byRef[r]; ok && inOrder[r] {
					rels, err := c.Add(m, 0, now)
					progress = progress || err == nil
					count(rels)
				}
			}
			if !progress && h.params.CauseWait > 0 {
				now += h.params.CauseWait
				rels := c.Tick(now)
				progress = len(rels) > 0
				count(rels)
			}
		}
		var stillWaiting []Ref
		for r := range readded {
			if !md.released[r] {
				stillWaiting = append(stillWaiting, r)
			}
		}
		if replayed != len(md.order) || c.Len() != len(stillWaiting) {
			return fmt.Errorf("replay released %d of %d, Len %d%s", replayed, len(md.order), c.Len(), dumpWaiting(c))
		}
		md.order = append(md.order, extra...)
		md.waiting = map[Ref]bool{}
		md.offerAt = map[Ref]int64{}
		for _, r := range stillWaiting { // re-read from the journal: waiting in the new core
			md.waiting[r], md.offered[r] = true, true
			md.offerAt[r] = now
		}
		// what it had received and not delivered is in the journal
		for r := range received {
			c.Know(r)
		}
		return nil
	}

	// the interleaving: every signal once, some twice, shuffled
	feed := make([]Meta, 0, 2*len(h.sigs))
	for _, m := range h.sigs {
		feed = append(feed, m)
		if rng.IntN(4) == 0 {
			feed = append(feed, m)
		}
	}
	rng.Shuffle(len(feed), func(a, b int) { feed[a], feed[b] = feed[b], feed[a] })
	restarts := 0
	for _, m := range feed {
		now += int64(rng.IntN(4))
		if _, err := add(m); err != nil {
			return err
		}
		switch x := rng.IntN(20); {
		case x < 3:
			if err := pullLoop(); err != nil {
				return err
			}
		case x < 6:
			if err := take(c.Tick(now)); err != nil {
				return err
			}
		case x == 6 && restarts < 2:
			restarts++
			if err := restart(); err != nil {
				return err
			}
		}
	}
	// the end: catch up and let every wait run out
	for round := 0; ; round++ {
		if err := pullLoop(); err != nil {
			return err
		}
		now += h.params.CauseWait
		if err := take(c.Tick(now)); err != nil {
			return err
		}
		if len(c.Pull()) == 0 && c.Len() == 0 {
			break
		}
		if round > len(h.sigs)+2 {
			return fmt.Errorf("no progress: Len %d, Pull %v%s", c.Len(), c.Pull(), dumpWaiting(c))
		}
	}
	for _, m := range h.sigs {
		if !md.released[m.Ref()] {
			return fmt.Errorf("%v never released", m.Ref())
		}
	}
	if gaps, causes := c.Missing(); len(gaps) != 0 || len(causes) != 0 {
		return fmt.Errorf("Missing at the end: %v %v", gaps, causes)
	}
	return nil
}

// kind is an error message without its refs and numbers, to count failures
// by kind.
func kind(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return kindRE.ReplaceAllString(msg, "#")
}

var kindRE = regexp.MustCompile(`[A-Z]:[0-9]+|[0-9]+|"[^"]*"`)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestPropertyCausalDelivery(t *testing.T) {
	cases, inter := 2000, 50
	if raceEnabled || testing.Short() {
		cases, inter = 2000, 20
	}
	cases = envInt("CAUSAL_PROP_CASES", cases)
	inter = envInt("CAUSAL_PROP_INTERLEAVINGS", inter)
	base := uint64(envInt("CAUSAL_PROP_BASE", 1))
	if s := os.Getenv("CAUSAL_PROP_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		base, cases = seed, 1
	}
	var st propStats
	start := time.Now()
	fails := 0
	kinds := map[string]int{}
	for i := range cases {
		seed := base + uint64(i)
		h := genHistory(rand.New(rand.NewPCG(seed, 0)))
		for k := range inter {
			if err := runInterleaving(h, rand.New(rand.NewPCG(seed, uint64(k)+1)), &st); err != nil {
				fails++
				kinds[kind(err)]++
				if fails <= 5 {
					t.Errorf("seed %d interleaving %d (CAUSAL_PROP_SEED=%d): %v\nparams %+v\nhistory:\n%s", seed, k, seed, err, h.params, h)
				}
				break
			}
		}
	}
	t.Logf("%d cases x %d interleavings = %d in %v; %d failing cases; adds %d, ErrFull %d, ErrDuplicate %d, pull loops %d, restarts %d, CauseLost %d, Dup %d, Conflict %d",
		cases, inter, cases*inter, time.Since(start).Round(time.Millisecond), fails, st.adds, st.full, st.dups, st.pulls, st.restarts, st.lost, st.dupFlags, st.conflicts)
	for k, n := range kinds {
		t.Logf("%6d failing cases: %s", n, k)
	}
}

func (h *history) String() string {
	var b strings.Builder
	for _, m := range h.sigs {
		fmt.Fprintf(&b, "  %v lam=%d deps=%v cause=%q src=%s id=%s dig=%d\n", m.Ref(), m.Lamport, m.Deps, m.Cause, m.Source, m.ID, m.Digest)
	}
	return b.String()
}

// dumpWaiting describes the waiting signals, for failure messages.
func dumpWaiting[T any](c *Core[T]) string {
	var b strings.Builder
	for r, it := range c.waiting {
		blk, onCause := c.blocker(it)
		fmt.Fprintf(&b, "\n  waiting %v (cause since %d, cause %q): blocked on %v cause=%v", r, it.causeSince, it.m.Cause, blk, onCause)
	}
	return b.String()
}
