package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// checkRecord checks node i's persistent subscription: each journaled
// signal delivered, each delivered journaled signal in the journal, the
// duplicate rule, per-origin FIFO and happens-before.
func (c *checker) checkRecord(i int) {
	pos := map[Key]int{} // first delivery's position
	var order []Entry    // first deliveries
	c.checkDuplicates(i, func(e Entry) {
		pos[e.Key()] = len(order)
		order = append(order, e)
	})
	c.v.Deliveries += len(order)
	for k, e := range c.inJ[i] {
		if _, doomed := c.expires(k); doomed {
			continue // it may leave the journal before it is delivered
		}
		if _, ok := pos[k]; !ok && !c.ownHostile(e) {
			c.add(Anomaly{Kind: "undelivered", ID: k.ID, Source: k.Source, Node: i, Detail: "in this node's journal, never delivered to its subscription"})
		}
	}
	at := map[[2]string]int{} // (origin, seq) -> position of its first delivery
	metas := make([]Meta, len(order))
	for p, e := range order {
		m, err := e.Meta()
		if err != nil {
			c.add(Anomaly{Kind: "content", ID: e.ID, Source: e.Source, Node: i, Detail: err.Error()})
		}
		if _, dup := at[[2]string{m.Origin, fmt.Sprint(m.Seq)}]; !m.Weak() && !dup {
			at[[2]string{m.Origin, fmt.Sprint(m.Seq)}] = p
		}
		metas[p] = m
	}
	last := map[string]uint64{}     // origin -> last sequence delivered
	skipped := map[string]uint64{}  // origin -> sequences skipped (retry aliases)
	excused := map[[2]string]bool{} // dependencies excused as retry aliases
	for p, e := range order {
		c.checkEntry(i, e, "record")
		m := metas[p]
		if m.Weak() || c.ownHostile(e) {
			continue // the hostile node's own signals: no honest rule (its sequences have holes on purpose)
		}
		if _, doomed := c.expires(e.Key()); doomed {
			// delivered, then pruned: no longer in the journal
		} else if _, ok := c.inJ[i][e.Key()]; !ok {
			c.add(Anomaly{Kind: "unjournaled", ID: e.ID, Source: e.Source, Node: i, Detail: "delivered, not in this node's journal"})
		}
		if m.Seq > last[m.Origin]+1 {
			skipped[m.Origin] += m.Seq - last[m.Origin] - 1
		}
		if m.Seq <= last[m.Origin] || skipped[m.Origin] > uint64(c.alias[m.Origin]) {
			c.add(Anomaly{Kind: "fifo", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("origin %s sequence %d delivered after %d", short(m.Origin), m.Seq, last[m.Origin])})
		}
		last[m.Origin] = max(last[m.Origin], m.Seq)
		c.checkHB(i, p, order, m, pos, at, excused)
	}
}

// checkDuplicates walks node i's record and calls first for each first
// delivery. A second delivery is allowed only in the process right after a
// kill -9, only of a signal the previous process handled, at most once,
// and before the process's first new handling.
func (c *checker) checkDuplicates(i int, first func(Entry)) {
	segment := -1
	var prev, cur map[Key]bool // handled by the previous and this process
	again := map[Key]bool{}
	fresh := false // this process has handled something new
	for _, e := range c.h.Records[i] {
		if e.Start {
			segment++
			prev, cur, again, fresh = cur, map[Key]bool{}, map[Key]bool{}, false
			continue
		}
		k := e.Key()
		if !e.Again {
			fresh = true
			cur[k] = true
			first(e)
			continue
		}
		c.v.Redelivered++
		afterKill := segment > 0 && segment-1 < len(c.h.Ends[i]) && c.h.Ends[i][segment-1] == "kill"
		why := ""
		switch {
		case !afterKill:
			why = "the previous process did not end by kill -9"
		case !prev[k]:
			why = "the previous process had not handled it"
		case again[k]:
			why = "redelivered twice"
		case fresh:
			why = "after this process handled a new signal"
		}
		if why != "" {
			c.add(Anomaly{Kind: "duplicate", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("delivered again in process %d: %s", segment+1, why)})
		}
		again[k], cur[k] = true, true
	}
}

// checkHB: every direct dependency of the delivery at p (the origin's
// previous sequence, the cause, the metadata's dependencies) was
// delivered before it; by induction so was its whole causal past.
func (c *checker) checkHB(i, p int, order []Entry, m Meta, pos map[Key]int, at map[[2]string]int, excused map[[2]string]bool) {
	e := order[p]
	type dep struct {
		what string
		at   int
		ok   bool
	}
	var deps []dep
	// seqDep adds the dependency on (o, q); one never delivered may be a
	// retry alias of o, within o's budget.
	seqDep := func(o string, q uint64) {
		if c.hostileOrigin(o) {
			return // a hostile signal may be given up (DepWait): what cites it need not wait for it
		}
		id := [2]string{o, fmt.Sprint(q)}
		pq, ok := at[id]
		if !ok && !excused[id] && len(excusedOf(excused, o)) < c.alias[o] {
			excused[id] = true
		}
		if !ok && excused[id] {
			return
		}
		deps = append(deps, dep{fmt.Sprintf("%s#%d", short(o), q), pq, ok})
	}
	if m.Seq > 1 {
		seqDep(m.Origin, m.Seq-1)
	}
	for _, d := range m.Deps {
		o := d.Origin
		if o == "" {
			o = c.refs[d.Ref]
		}
		if o == "" {
			deps = append(deps, dep{"ref " + d.Ref + fmt.Sprintf("#%d", d.Seq), 0, false})
			continue
		}
		seqDep(o, d.Seq)
	}
	if e.Cause != "" {
		ck := c.causeKey(e)
		q, ok := pos[ck]
		if c.causeOnlyLater(i, ck, m) || (!ok || q > p) && c.causeAfterEffect(i, ck, m) {
			// Its only copies follow it in its own origin's order (a retry
			// of the cause on the effect's node, the first try lost), or
			// the cause's own causal past holds a signal of the effect's
			// origin at or after the effect (a cycle: the cause waits,
			// through causes and predecessors, for a retry published on
			// the effect's node after it): it cannot come first.
		} else if ok || !c.weakCause(ck) {
			what := "cause " + ck.String()
			if slices.ContainsFunc(c.ops[e.Key()], func(o Op) bool { return o.OutOfBand }) {
				what += " (out of band)"
			}
			deps = append(deps, dep{what, q, ok})
		}
		if ok {
			c.v.Effects++
		}
	}
	for _, d := range deps {
		c.v.HB++
		if d.ok && d.at > p {
			if exp, doomed := c.expires(order[d.at].Key()); doomed && exp < e.T {
				// Past retention when the effect was delivered (Parts.Retention):
				// a replica that had not had it need not wait for it.
				continue
			}
		}
		switch {
		case !d.ok:
			c.add(Anomaly{Kind: "causal", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("delivered at %d, its dependency %s never", p, d.what)})
		case d.at > p:
			c.add(Anomaly{Kind: "causal", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("delivered at %d, before its dependency %s at %d", p, d.what, d.at)})
		}
	}
}

// causeOnlyLater reports whether every copy of the cause k in node i's
// journal is a later signal of the effect's own origin.
func (c *checker) causeOnlyLater(i int, k Key, m Meta) bool {
	found := false
	for _, e := range c.h.Journals[i] {
		if e.Key() != k {
			continue
		}
		cm, err := e.Meta()
		if err != nil || cm.Origin != m.Origin || cm.Seq <= m.Seq {
			return false
		}
		found = true
	}
	return found
}

// causeAfterEffect reports whether the causal past of every copy of the
// cause k in node i's journal (each origin's earlier signals, their
// dependencies and their causes, transitively) holds a signal of the
// effect's origin at or after the effect itself: then no order delivers
// the cause first.
func (c *checker) causeAfterEffect(i int, k Key, m Meta) bool {
	ix := c.journalIndex(i)
	copies := ix.copies[k]
	if len(copies) == 0 {
		return false
	}
	for _, start := range copies {
		reach := map[string]uint64{} // per origin, the highest sequence in the past
		done := map[string]uint64{}  // per origin, the sequences expanded so far
		todo := []place{start}
		for len(todo) > 0 {
			pl := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if pl.q <= reach[pl.o] {
				continue
			}
			reach[pl.o] = pl.q
			for q := done[pl.o] + 1; q <= pl.q; q++ {
				e, ok := ix.at[place{pl.o, q}]
				if !ok {
					continue
				}
				for _, d := range e.deps {
					todo = append(todo, d)
				}
				if cs := ix.copies[e.cause]; e.cause != (Key{}) && len(cs) == 1 {
					// Any copy satisfies a cause: only a cause with one
					// copy surely holds its effect back.
					todo = append(todo, cs[0])
				}
			}
			done[pl.o] = max(done[pl.o], pl.q)
		}
		if reach[m.Origin] < m.Seq {
			return false // this copy's past does not hold the effect: it could come first
		}
	}
	return true
}

type place struct {
	o string
	q uint64
}

type indexed struct {
	deps  []place
	cause Key
}

type journalIndex struct {
	at     map[place]indexed
	copies map[Key][]place
}

// journalIndex indexes node i's journal by place and by key (built once).
func (c *checker) journalIndex(i int) *journalIndex {
	if c.jix == nil {
		c.jix = map[int]*journalIndex{}
	}
	if ix := c.jix[i]; ix != nil {
		return ix
	}
	ix := &journalIndex{at: map[place]indexed{}, copies: map[Key][]place{}}
	for _, e := range c.h.Journals[i] {
		em, err := e.Meta()
		if err != nil || em.Origin == "" {
			continue
		}
		pl := place{em.Origin, em.Seq}
		var x indexed
		for _, d := range em.Deps {
			o := d.Origin
			if o == "" {
				o = c.refs[d.Ref]
			}
			if o != "" {
				x.deps = append(x.deps, place{o, d.Seq})
			}
		}
		if e.Cause != "" {
			x.cause = c.causeKey(e)
		}
		ix.at[pl] = x
		ix.copies[e.Key()] = append(ix.copies[e.Key()], pl)
	}
	c.jix[i] = ix
	return ix
}

// excusedOf lists the excused dependencies on origin o.
func excusedOf(excused map[[2]string]bool, o string) []string {
	var out []string
	for id := range excused {
		if id[0] == o {
			out = append(out, id[1])
		}
	}
	return out
}

// causeKey resolves an effect's causeid (a bare id) to the key the
// workload meant: the op's recorded cause source, else the effect's.
func (c *checker) causeKey(e Entry) Key {
	for _, o := range c.ops[e.Key()] {
		if o.CauseSource != "" {
			return Key{o.CauseSource, e.Cause}
		}
	}
	return Key{e.Source, e.Cause}
}

// weakCause says whether a cause is a signal that need not exist anywhere:
// never published, weak, refused, or not required to exist.
func (c *checker) weakCause(k Key) bool {
	must, _ := c.mustExist(k)
	if must {
		return false
	}
	_, there := c.inJ[0][k]
	return c.h.Nodes == 0 || !there
}

// checkAvailability: a live, unpaused node answered with an error status
// (a quorum timeout is an answer the API documents, not an error).
func (c *checker) checkAvailability() {
	for _, o := range c.h.Ops {
		if o.Live && o.Status >= 400 && o.Outcome != QuorumTimeout {
			c.add(Anomaly{Kind: "unavailable", ID: o.ID, Source: o.Source, Node: o.Node, Detail: fmt.Sprintf("%s publish at %s answered %d: %s", o.Consistency, o.where(), o.Status, o.Err)})
		}
	}
}

// checkCounters: the watched drop counters and the WARN/ERROR lines the
// schedule does not expect.
func (c *checker) checkCounters() {
	for i, m := range c.h.Counters {
		for _, r := range Watched {
			if m[r] > 0 && !contains(c.h.Expect.Counters, r) {
				c.add(Anomaly{Kind: "metric", Node: i, Detail: fmt.Sprintf("signalmesh_dropped_total{reason=%q} = %v", r, m[r])})
			}
		}
	}
	for i, lines := range c.h.Logs {
		seen := map[string]int{}
		for _, l := range lines {
			if expected(c.h.Expect.Logs, l) || c.hostileExcused(l) {
				continue
			}
			msg := logMsg(l)
			if seen[msg]++; seen[msg] == 1 {
				c.add(Anomaly{Kind: "log", Node: i, Detail: l})
			}
		}
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func expected(subs []string, line string) bool {
	for _, s := range subs {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// logMsg is a slog text line's msg field (the line when it has none).
func logMsg(l string) string {
	_, rest, ok := strings.Cut(l, "msg=")
	if !ok {
		return l
	}
	if strings.HasPrefix(rest, `"`) {
		if end := strings.Index(rest[1:], `"`); end >= 0 {
			return rest[1 : end+1]
		}
	}
	msg, _, _ := strings.Cut(rest, " ")
	return msg
}

// Explain returns the smallest history that shows the anomalies: the
// publishes of the signals they name and of their causes, and the faults
// under way when those publishes were made.
func Explain(h History, faults []Fault, v Verdict) string {
	keys := map[Key]bool{}
	ops := map[Key]Op{}
	for _, o := range h.Ops {
		ops[o.Key()] = o
	}
	for _, a := range v.Anomalies {
		if a.ID != "" {
			k := Key{a.Source, a.ID}
			keys[k] = true
			if o := ops[k]; o.Cause != "" {
				keys[Key{o.CauseSource, o.Cause}] = true
			}
		}
	}
	var b strings.Builder
	var times []time.Duration
	for _, o := range h.Ops {
		if keys[o.Key()] {
			fmt.Fprintf(&b, "  %7.3fs publish %s at %s (%s, cause %q): %s %d %s\n", o.At.Seconds(), o.Key(), o.where(), o.Consistency, o.Cause, o.Outcome, o.Status, o.Err)
			times = append(times, o.At)
		}
	}
	for _, f := range faults {
		for _, t := range times {
			if t >= f.At-time.Second && t <= f.At+f.For+time.Second {
				fmt.Fprintf(&b, "  fault %s\n", f)
				break
			}
		}
	}
	for i := 0; i < h.Nodes && i < len(h.Records); i++ {
		n := 0
		for k, e := range h.Records[i] {
			if keys[e.Key()] && n < 10 {
				n++
				fmt.Fprintf(&b, "  node %d record line %d: %s again=%v\n", i, k+1, e.Key(), e.Again)
			}
		}
		if i < len(h.Ends) && len(h.Ends[i]) > 0 {
			fmt.Fprintf(&b, "  node %d processes ended by: %s\n", i, strings.Join(h.Ends[i], ", "))
		}
	}
	explainGroup(h.Group, keys, &b)
	return b.String()
}
