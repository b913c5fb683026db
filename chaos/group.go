package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/signalmesh/signalmesh/router"
)

// The group part (Parts.Group): every node runs a member of one consumer
// group beside its persistent subscription.
const (
	groupName     = "chaos"
	groupSubjects = 12 // the workload's subjects, by a hash of the id
	// groupMargin widens each failover window: a renewal's travel, a
	// registrar read, a takeover's journal read and a process's start on
	// a loaded machine.
	groupMargin = 3 * time.Second
)

// groupRule is the group rule's entry in Rules.
const groupRule = "a signal journaled on every replica that matches the group's pattern was never handled by a member of the group " +
	"(the records of killed processes count up to their kill), a member handled a signal never published, " +
	"a signal was handled more than once outside every failover window, or (hash strategy) between two failover windows " +
	"a subject's signals went to more than one member, or one member handled an origin's signals of one subject out of sequence. " +
	"Failover windows, L the lease and M 3 s: a kill -9, pause, long pause, settle kill or slow link of node k, " +
	"[start-M, end+L+M] for signals node k handled; a cut (halves, isolate, bridge, flap, one-way), [start-M, heal+L+M] for any node " +
	"(both sides handle during a cut); in a chain bootstrap, a kill -9, pause, long pause, settle kill, slow link, clean restart or process start of an inner node k also parts the nodes before it from those after it: its window also holds a duplicate with a handler on each side of k; each start of node k's process (its record's start line at T), [T, T+L+M] for signals node k handled " +
	"(a member that joins may share signals until the others hear of it). A duplicate is inside a window when the signal's first publish " +
	"or one of its handlings falls in it and, for a window of node k, node k is among its handlers. " +
	"A clean restart (SIGTERM, a hand-off of the final mark) opens no window but its start's: it must leave no duplicate"

// Mutations of the group rule (check's off; the tests show each part is
// needed): every window the whole schedule; no at-least-once.
const (
	mutWideWindows   = "group:wide-windows"
	mutNoAtLeastOnce = "group:no-at-least-once"
)

// drawGroup draws a schedule's group strategy and lease from its seed
// (a generator of their own: the other parts' draws stay the same).
func drawGroup(seed uint64) (strategy, lease string) {
	rng := rand.New(rand.NewPCG(seed, 0x67e0))
	switch k := rng.IntN(10); {
	case k < 6:
		strategy = "hash:subject"
	case k < 8:
		strategy = "balanced"
	default:
		strategy = "local-first"
	}
	return strategy, []string{"1s", "1500ms", "2s"}[rng.IntN(3)]
}

// GroupHistory is what the group rule reads (Parts.Group).
type GroupHistory struct {
	// Records are, per node, its group member's record (the daemon's
	// -record-group-file), with times (Entry.T).
	Records [][]Entry
	// Pattern is the members' pattern; Strategy the group's.
	Pattern  string
	Strategy string
	// Lease is the nodes' lease: a dead member's share moves after it.
	Lease time.Duration
	// Start is when the workload started: ops' At and records' T are
	// compared through it.
	Start time.Time
	// Faults are the schedule's faults, a settle kill at the time it was
	// made.
	Faults []Fault
	// Chain: the nodes were bootstrapped as a chain and do not discover
	// each other (Setup.Chain), so a node down, paused or slow also cuts
	// the nodes on one side of it from those on the other.
	Chain bool
	// Relays are the NAT topology's public nodes: the edges that reach
	// each other only through them (behind a symmetric NAT, or not yet
	// hole-punched) lose each other while one is down, paused or slow, so
	// a process fault or start of a relay is a failover window for every
	// node, as a cut is.
	Relays []int `json:",omitempty"`
}

// GroupFigures are the group rule's counts.
type GroupFigures struct {
	Strategy string `json:"strategy"`
	// Required signals: journaled on every replica, matching the pattern.
	Required int `json:"required"`
	// Handled signals: by at least one member; Handlings: record lines.
	Handled   int `json:"handled"`
	Handlings int `json:"handlings"`
	// Duplicates are the signals handled more than once inside a failover
	// window; Extra the handlings beyond the first of those.
	Duplicates int `json:"duplicates"`
	Extra      int `json:"extra"`
	// Windows are the failover windows of the schedule.
	Windows int `json:"windows"`
	// Ordered counts the signals whose subject's member and order were
	// checked (hash strategy, outside every window).
	Ordered int `json:"ordered"`
}

// window is a failover window: [from, to] since the workload started,
// for signals handled by one of nodes (nil: by any).
type window struct {
	from, to time.Duration
	nodes    []int
	// sides: a fault of an inner link of a chain (node k): the window
	// also excuses a duplicate with a handler on each side of node k
	// (before it and after it), which lost each other.
	sides [2][]int
	why   string
}

// handling is one line of a group record.
type handling struct {
	node, seg, pos int
	at             time.Duration
	e              Entry
}

func (h handling) String() string {
	again := ""
	if h.e.Again {
		again = " again"
	}
	return fmt.Sprintf("node %d (process %d) at %.3fs%s", h.node, h.seg+1, h.at.Seconds(), again)
}

// groupWindows are the failover windows of a group history (see Rules);
// with clean, also the clean restarts' (bounds of the order check, not
// excuses for duplicates).
func groupWindows(g *GroupHistory, clean bool) []window {
	var out []window
	n := len(g.Records)
	// sides: in a chain, node k's process fault or start also parts the
	// nodes before it from those after it (none at a chain's ends).
	sides := func(k int) (s [2][]int) {
		if !g.Chain || k <= 0 || k >= n-1 {
			return s
		}
		for i := range n {
			if i < k {
				s[0] = append(s[0], i)
			} else if i > k {
				s[1] = append(s[1], i)
			}
		}
		return s
	}
	for _, f := range g.Faults {
		w := window{from: f.At - groupMargin, to: f.At + f.For + g.Lease + groupMargin, why: f.String()}
		switch {
		case nodeKind(f.Kind) && slices.Contains(g.Relays, f.Node): // any node
		case f.Kind == Kill, f.Kind == Pause, f.Kind == LongPause, f.Kind == SettleKill, f.Kind == Slow:
			w.nodes, w.sides = []int{f.Node}, sides(f.Node)
		case f.Kind == Halves, f.Kind == Isolate, f.Kind == Bridge, f.Kind == Flap, f.Kind == OneWay:
		case f.Kind == Restart:
			// A clean restart leaves no duplicate on its own node; in a
			// chain it parts the two sides while the node is down.
			w.sides = sides(f.Node)
			if clean {
				w.nodes = []int{f.Node}
			} else if w.sides[0] == nil {
				continue
			}
		default:
			continue
		}
		out = append(out, w)
	}
	for i, rec := range g.Records {
		for _, e := range rec {
			if e.Start && e.T != 0 {
				at := g.since(e.T)
				w := window{from: at, to: at + g.Lease + groupMargin, nodes: []int{i}, sides: sides(i), why: fmt.Sprintf("node %d started at %.3fs", i, at.Seconds())}
				if slices.Contains(g.Relays, i) {
					w.nodes = nil // any node
				}
				out = append(out, w)
			}
		}
	}
	return out
}

// since is a record time against the workload's start.
func (g *GroupHistory) since(t int64) time.Duration { return time.Duration(t - g.Start.UnixNano()) }

// covers reports whether the window holds t and, when it names nodes,
// one of hs's handlers.
func (w window) covers(t time.Duration, hs []handling) bool {
	if t < w.from || t > w.to {
		return false
	}
	if w.nodes == nil && w.sides[0] == nil {
		return true // a cut: any node
	}
	among := func(ns []int) bool {
		return slices.ContainsFunc(hs, func(h handling) bool { return slices.Contains(ns, h.node) })
	}
	return among(w.nodes) || w.sides[0] != nil && among(w.sides[0]) && among(w.sides[1])
}

// groupHandlings indexes every member's handlings by signal.
func groupHandlings(g *GroupHistory) (map[Key][]handling, []Key) {
	by := map[Key][]handling{}
	var order []Key
	for i, rec := range g.Records {
		seg := -1
		for pos, e := range rec {
			if e.Start {
				seg++
				continue
			}
			k := e.Key()
			if by[k] == nil {
				order = append(order, k)
			}
			by[k] = append(by[k], handling{node: i, seg: seg, pos: pos, at: g.since(e.T), e: e})
		}
	}
	return by, order
}

// checkGroup checks the consumer group's records (see Rules, "group").
func (c *checker) checkGroup() {
	g := c.h.Group
	if g == nil {
		return
	}
	f := &GroupFigures{Strategy: g.Strategy}
	c.v.Group = f
	ws := groupWindows(g, false)
	f.Windows = len(ws)
	if c.off[mutWideWindows] {
		ws = []window{{from: -1 << 62, to: 1 << 62}}
	}
	hs, order := groupHandlings(g)
	if !c.off[mutNoAtLeastOnce] {
		c.groupAtLeastOnce(g, hs, f)
	}
	for _, k := range order {
		if k.Source == HostileSource {
			continue // the hostile node's: held to no honest rule (forgeries: the hostile rule)
		}
		c.groupOnce(k, hs[k], ws, f)
	}
	if strings.HasPrefix(g.Strategy, "hash:") {
		c.groupOrder(hs, order, groupWindows(g, true), f)
	}
}

// groupAtLeastOnce: every signal journaled on every replica that matches
// the pattern was handled by a member.
func (c *checker) groupAtLeastOnce(g *GroupHistory, hs map[Key][]handling, f *GroupFigures) {
	if c.h.Nodes == 0 {
		return
	}
	pattern := g.Pattern
	if pattern == "" {
		pattern = "**"
	}
	for _, e := range c.h.Journals[0] {
		k := e.Key()
		if _, doomed := c.expires(k); doomed {
			continue // Parts.Retention: it may leave the journal before a member is given it
		}
		if c.ownHostile(e) || !router.Matches(pattern, e.Type) || slices.ContainsFunc(c.inJ, func(j map[Key]Entry) bool { _, ok := j[k]; return !ok }) {
			continue
		}
		f.Required++
		if len(hs[k]) == 0 {
			c.add(Anomaly{Kind: "group", ID: k.ID, Source: k.Source, Node: -1, Detail: "journaled on every replica, never handled by a member of the group" + c.publishedAt(k)})
		}
	}
}

// groupOnce: a signal handled more than once only inside a failover
// window; and only a published one.
func (c *checker) groupOnce(k Key, hs []handling, ws []window, f *GroupFigures) {
	f.Handled++
	f.Handlings += len(hs)
	at, published := c.firstPublish(k)
	if !published {
		c.add(Anomaly{Kind: "group", ID: k.ID, Source: k.Source, Node: hs[0].node, Detail: "handled by a member, never published"})
	}
	if len(hs) < 2 {
		return
	}
	for _, w := range ws {
		if published && w.covers(at, hs) || slices.ContainsFunc(hs, func(h handling) bool { return w.covers(h.at, hs) }) {
			f.Duplicates++
			f.Extra += len(hs) - 1
			return
		}
	}
	var by []string
	for _, h := range hs {
		by = append(by, h.String())
	}
	c.add(Anomaly{Kind: "group", ID: k.ID, Source: k.Source, Node: hs[1].node,
		Detail: fmt.Sprintf("handled %d times outside every failover window (%s)%s", len(hs), strings.Join(by, ", "), c.publishedAt(k))})
}

// firstPublish is when the signal was first published (since the
// workload started).
func (c *checker) firstPublish(k Key) (time.Duration, bool) {
	ops := c.ops[k]
	if len(ops) == 0 {
		return 0, false
	}
	at := ops[0].At
	for _, o := range ops[1:] {
		at = min(at, o.At)
	}
	return at, true
}

func (c *checker) publishedAt(k Key) string {
	at, ok := c.firstPublish(k)
	if !ok {
		return ""
	}
	o := c.ops[k][0]
	return fmt.Sprintf("; published at %.3fs at %s (%s, %s)", at.Seconds(), o.where(), o.Consistency, o.Outcome)
}

// groupOrder (hash strategy): between two windows (clean restarts'
// included), the signals of one subject handled once, published and
// handled outside every window, went to one member, which handled each
// origin's of them in sequence.
func (c *checker) groupOrder(hs map[Key][]handling, order []Key, ws []window, f *GroupFigures) {
	type run struct {
		subject string
		gap     int
	}
	runs := map[run][]handling{}
	var keys []run
	for _, k := range order {
		h := hs[k]
		at, ok := c.firstPublish(k)
		if len(h) != 1 || !ok || c.ops[k][0].Subject == "" || inAny(ws, at) || inAny(ws, h[0].at) {
			continue
		}
		r := run{c.ops[k][0].Subject, gapOf(ws, h[0].at)}
		if runs[r] == nil {
			keys = append(keys, r)
		}
		runs[r] = append(runs[r], h[0])
	}
	for _, r := range keys {
		f.Ordered += len(runs[r])
		c.checkRun(r.subject, runs[r])
	}
}

// checkRun checks one subject's handlings between two windows: one
// member, each origin in sequence.
func (c *checker) checkRun(subject string, hs []handling) {
	slices.SortFunc(hs, func(a, b handling) int { return a.pos - b.pos })
	first := hs[0]
	last := map[string]uint64{}
	for _, h := range hs {
		if h.node != first.node || h.seg != first.seg {
			c.add(Anomaly{Kind: "group", ID: h.e.ID, Source: h.e.Source, Node: h.node,
				Detail: fmt.Sprintf("subject %s handled by %s, and by node %d (process %d) between the same failover windows", subject, h, first.node, first.seg+1)})
			return
		}
		m, err := h.e.Meta()
		if err != nil || m.Weak() {
			continue
		}
		if m.Seq <= last[m.Origin] {
			c.add(Anomaly{Kind: "group", ID: h.e.ID, Source: h.e.Source, Node: h.node,
				Detail: fmt.Sprintf("subject %s: origin %s sequence %d handled after %d", subject, short(m.Origin), m.Seq, last[m.Origin])})
		}
		last[m.Origin] = max(last[m.Origin], m.Seq)
	}
}

func inAny(ws []window, t time.Duration) bool {
	return slices.ContainsFunc(ws, func(w window) bool { return t >= w.from && t <= w.to })
}

// gapOf numbers the stretch between windows that holds t: the windows
// that end before it.
func gapOf(ws []window, t time.Duration) int {
	n := 0
	for _, w := range ws {
		if w.to < t {
			n++
		}
	}
	return n
}

// explainGroup adds the group records' lines that name keys (10 per
// node at most).
func explainGroup(g *GroupHistory, keys map[Key]bool, b *strings.Builder) {
	if g == nil {
		return
	}
	for i, rec := range g.Records {
		n := 0
		for k, e := range rec {
			if (e.Start || keys[e.Key()]) && n < 10 {
				n++
				fmt.Fprintf(b, "  node %d group record line %d at %.3fs: %s\n", i, k+1, g.since(e.T).Seconds(), groupLine(e))
			}
		}
	}
}

func groupLine(e Entry) string {
	switch {
	case e.Start:
		return "process start"
	case e.Again:
		return e.Key().String() + " again"
	}
	return e.Key().String()
}

// groupHandled reports the first journaled signal no group member has
// handled yet (settle waits for the group too).
func (c *cluster) groupHandled(journals [][]Entry) error {
	if c.setup.Group == "" || len(journals) == 0 {
		return nil
	}
	have := map[Key]bool{}
	for _, p := range c.procs {
		rec, err := ReadRecord(p.group)
		if err != nil {
			return err
		}
		for _, e := range rec {
			have[e.Key()] = true
		}
	}
	for _, e := range journals[0] {
		if !have[e.Key()] && e.Source != HostileSource {
			return fmt.Errorf("no group member has handled %s yet", e.Key())
		}
	}
	return nil
}

// collectGroup adds the group's history (Parts.Group) after shutdown.
func (c *cluster) collectGroup(h *History, start time.Time, faults []Fault) error {
	if c.setup.Group == "" {
		return nil
	}
	lease, err := time.ParseDuration(c.setup.Lease)
	if err != nil {
		return errors.Join(errors.New("chaos: group lease"), err)
	}
	g := &GroupHistory{Pattern: "**", Strategy: c.setup.Group, Lease: lease, Start: start, Faults: slices.Clone(faults), Chain: c.setup.Chain,
		Relays: c.net.relays()}
	for i, f := range g.Faults {
		if f.Kind == SettleKill && c.settleKill > 0 {
			g.Faults[i].At = c.settleKill
		}
	}
	for _, p := range c.procs {
		rec, err := ReadRecord(p.group)
		if err != nil {
			return err
		}
		g.Records = append(g.Records, rec)
	}
	h.Group = g
	return nil
}
