package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Outcome is what a publish call answered.
type Outcome string

// Outcomes of a publish.
const (
	// Acked: Publish returned success. An eventual or quorum signal must
	// then be on every replica after the heal.
	Acked Outcome = "acked"
	// QuorumTimeout: the signal is journaled on its node (durable) but k
	// acknowledgements did not come in time; it must still converge.
	QuorumTimeout Outcome = "quorum-timeout"
	// Refused: the node answered with an error, or refused the
	// connection: nothing was published.
	Refused Outcome = "refused"
	// Unknown: no answer (the node was down, paused or cut from the
	// harness), or a 5xx: the signal may or may not exist.
	Unknown Outcome = "unknown"
)

// Op is one publish the workload made.
type Op struct {
	Source      string        `json:"source"`
	ID          string        `json:"id"`
	Type        string        `json:"type"`
	Sum         string        `json:"sum"`  // DataSum of the data published
	Node        int           `json:"node"` // the persistent node, or -1: an ephemeral one
	Ephemeral   int           `json:"ephemeral,omitempty"`
	Origin      string        `json:"origin,omitempty"` // peer id of the node it was sent to
	Consistency string        `json:"consistency"`      // eventual, weak, quorum:K
	Cause       string        `json:"cause,omitempty"`
	CauseSource string        `json:"cause_source,omitempty"`
	OutOfBand   bool          `json:"out_of_band,omitempty"` // the cause came from another node's publish
	Reuse       bool          `json:"reuse,omitempty"`       // an id published before under another source
	Retry       bool          `json:"retry,omitempty"`       // a retry of an unknown outcome, same (source, id)
	Probe       bool          `json:"probe,omitempty"`       // the availability probe after settle
	At          time.Duration `json:"at"`                    // since the workload started
	Took        time.Duration `json:"took"`                  // until the answer
	Outcome     Outcome       `json:"outcome"`
	Status      int           `json:"status,omitempty"` // HTTP status, when there was an answer
	// Live says the node's process ran, unpaused, from before the call
	// to its answer: an error status from it is an anomaly.
	Live bool   `json:"live,omitempty"`
	Err  string `json:"err,omitempty"`
	// Subject is the signal's subject (the group part's, by op index).
	Subject string `json:"subject,omitempty"`
	// Time is the signal's time attribute when the workload set one, and
	// Expires when that puts it past retention (Unix nanoseconds): a
	// doomed op (Parts.Retention). 0: retained.
	Time    string `json:"time,omitempty"`
	Expires int64  `json:"expires,omitempty"`
}

// Key is the op's signal identity.
func (o Op) Key() Key { return Key{o.Source, o.ID} }

func (o Op) journaled() bool { return o.Consistency != "weak" }

// Ephemeral is how an ephemeral node ended: "term" or "kill" (it never
// comes back), and its peer id.
type Ephemeral struct {
	Peer string `json:"peer"`
	End  string `json:"end"` // term, kill, term-unconfirmed (its Close could not hand off), failed
	Host int    `json:"host"`
}

// tookAlong reports whether the node may have taken acknowledged signals
// with it: killed, or closed without a peer confirming its last ones.
func (e Ephemeral) tookAlong() bool { return e.End == "kill" || e.End == "term-unconfirmed" }

// History is what the checker reads: every publish, every replica's
// journal (in replay order) and every node's delivery record, the
// ephemeral nodes, the nodes' counters and warnings.
type History struct {
	Nodes    int
	Ops      []Op
	Journals [][]Entry // per node, replay order
	Records  [][]Entry // per node
	// Ends says, per node, how each process but the last ended, in order
	// ("kill", "term", "exit"): the Start lines of its record follow them.
	Ends      [][]string
	Ephemeral []Ephemeral
	// Counters are, per node, the dropped_total counters by reason,
	// summed over its processes; Logs its WARN and ERROR lines.
	Counters []map[string]float64
	Logs     [][]string
	// Rejected are, per node, the rejected_total counters by reason,
	// summed over its processes.
	Rejected []map[string]float64
	// Pruned are, per node, the journal entries ("signals") and blocks
	// ("blocks") it pruned, summed over its processes; Doomed how many
	// of the first ops were published doomed (Setup.Doomed).
	Pruned []map[string]float64
	Doomed int
	// Hostile is the hostile node's report; HostileOn says one was to
	// run (then a missing report is an anomaly).
	Hostile   *HostileReport
	HostileOn bool
	// Expect names the counters and log messages this schedule's faults
	// and limits explain (not anomalies).
	Expect Expect
	// Group is the consumer group's history (Parts.Group); nil: none.
	Group *GroupHistory
}

// Expect is what a schedule may show without it being an anomaly.
type Expect struct {
	Counters []string `json:"counters,omitempty"` // dropped_total reasons
	Logs     []string `json:"logs,omitempty"`     // substrings of log messages
}

// Watched are the dropped_total reasons the checker reads.
var Watched = []string{"subscriber_overflow", "causal_buffer_full", "missing_cause", "journal_write"}

// Anomaly is one thing the checker found wrong.
type Anomaly struct {
	Kind   string `json:"kind"`
	ID     string `json:"id,omitempty"`
	Source string `json:"source,omitempty"`
	Node   int    `json:"node"`
	Detail string `json:"detail"`
}

func (a Anomaly) String() string {
	return fmt.Sprintf("%s: node %d: %s %s %s", a.Kind, a.Node, a.Source, a.ID, a.Detail)
}

// Verdict is the checker's answer.
type Verdict struct {
	OK        bool      `json:"ok"`
	Anomalies []Anomaly `json:"anomalies"`
	// Figures the report prints.
	Published   int             `json:"published"` // ops
	ByOutcome   map[Outcome]int `json:"by_outcome"`
	Journaled   int             `json:"journaled"`    // signals in the (first) journal
	QuorumAcked int             `json:"quorum_acked"` // acked quorum publishes, each checked on >= k+1 replicas
	Effects     int             `json:"effects"`      // effects whose order was checked at every node
	Redelivered int             `json:"redelivered"`  // Again lines, each after a kill -9
	Deliveries  int             `json:"deliveries"`   // first deliveries, all nodes
	Origins     int             `json:"origins"`      // distinct origins in the journals
	HB          int             `json:"hb"`           // happens-before edges checked, all nodes
	Parts       map[string]int  `json:"parts"`        // workload parts exercised: ops per part
	// Counts are the anomalies by kind, all of them (Anomalies keeps 20
	// of each kind).
	Counts map[string]int `json:"counts,omitempty"`
	// Dropped are the nodes' watched drop counters, expected or not.
	Dropped []map[string]float64 `json:"dropped,omitempty"`
	// Group are the consumer group's figures (Parts.Group).
	Group *GroupFigures `json:"group,omitempty"`
	// Rejected are the nodes' rejected_total counters (hostile messages
	// refused, by reason).
	Rejected []map[string]float64 `json:"rejected,omitempty"`
	// Pruned are the nodes' pruned journal entries and blocks
	// (Parts.Retention).
	Pruned []map[string]float64 `json:"pruned,omitempty"`
}

const maxPerKind = 20 // anomalies kept per kind (the count is exact)

// The anomaly kinds, one per rule; Rules lists them for a report.
var Rules = map[string]string{
	"lost":        "an acknowledged (or quorum-timed-out, or delivered-by-gossip) signal is missing from a journal",
	"quorum":      "an acknowledged Quorum(k) is on fewer than k+1 replicas",
	"phantom":     "a journal or a record holds a signal never published, refused, or weak",
	"divergent":   "two journals differ (signals or replay order)",
	"content":     "a signal's content differs from what was published, or between replicas",
	"origin":      "a journaled signal's origin is not the node it was published on",
	"gap":         "a journal's sequence numbers of one origin are not 1..n, each once",
	"undelivered": "a journaled signal never reached a node's persistent subscription",
	"unjournaled": "a node delivered a journaled-consistency signal its journal does not hold",
	"duplicate":   "a redelivery not allowed by the duplicate rule",
	"fifo":        "a subscriber delivered an origin's signals out of sequence or with a gap",
	"causal":      "a subscriber delivered a signal before one it happens-after (cause, dependency)",
	"unavailable": "a live, unpaused node answered a publish with a 4xx or 5xx",
	"metric":      "a watched drop counter the schedule does not expect",
	"log":         "a WARN or ERROR log line the schedule does not expect",
	"group":       groupRule,
	"retention":   "with retention (Parts.Retention), a node pruned no journal entry: the part did not run",
	"hostile":     "a signal the hostile node forged in another's name is journaled or delivered; or an attack it sent no honest node refused and counted; or it did not run",
}

// checker carries one Check's state.
type checker struct {
	h     History
	jix   map[int]*journalIndex // by node, built on demand (causeAfterEffect)
	v     *Verdict
	count map[string]int
	ops   map[Key][]Op // every op of a key (a retry makes two)
	inJ   []map[Key]Entry
	refs  map[string]string // PeerRef -> origin
	off   map[string]bool   // rules switched off (tests: mutations)
	// alias counts, per origin, the retried keys it was sent whose
	// journaled copy another origin stamped: each may have cost it a
	// sequence number no replica keeps (the identity is (source, id)),
	// so that many holes in its sequences are excused.
	alias map[string]int
}

// Check verifies a history against every rule (see Rules).
func Check(h History) Verdict { return check(h, nil) }

// check is Check with some rules switched off (the mutation tests show
// each rule is needed).
func check(h History, off map[string]bool) Verdict {
	v := Verdict{ByOutcome: map[Outcome]int{}, Parts: map[string]int{}}
	c := &checker{h: h, v: &v, count: map[string]int{}, ops: map[Key][]Op{}, refs: map[string]string{}, off: off}
	c.index()
	v.Dropped, v.Rejected, v.Pruned = h.Counters, h.Rejected, h.Pruned
	c.checkDurable()
	c.checkJournals()
	for i := 0; i < h.Nodes; i++ {
		c.checkRecord(i)
	}
	c.checkAvailability()
	c.checkCounters()
	c.checkGroup()
	c.checkHostile()
	c.checkRetention()
	kinds := make([]string, 0, len(c.count))
	for k := range c.count {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if c.count[k] > maxPerKind {
			v.Anomalies = append(v.Anomalies, Anomaly{Kind: k, Node: -1, Detail: fmt.Sprintf("%d in all, %d shown", c.count[k], maxPerKind)})
		}
	}
	v.OK = len(v.Anomalies) == 0
	v.Counts = c.count
	return v
}

func (c *checker) add(a Anomaly) {
	if c.off[a.Kind] {
		return
	}
	c.count[a.Kind]++
	if c.count[a.Kind] <= maxPerKind {
		c.v.Anomalies = append(c.v.Anomalies, a)
	}
}

// index builds the lookups and counts the parts exercised.
func (c *checker) index() {
	h := c.h
	for _, o := range h.Ops {
		c.ops[o.Key()] = append(c.ops[o.Key()], o)
		c.v.ByOutcome[o.Outcome]++
		c.refs[PeerRef(o.Origin)] = o.Origin
		for part, on := range map[string]bool{"ephemeral": o.Node < 0, "out_of_band": o.OutOfBand, "reuse": o.Reuse,
			"retry": o.Retry, "probe": o.Probe, "effect": o.Cause != ""} {
			if on {
				c.v.Parts[part]++
			}
		}
	}
	c.v.Published = len(h.Ops)
	origins := map[string]bool{}
	c.inJ = make([]map[Key]Entry, h.Nodes)
	for i := range c.inJ {
		c.inJ[i] = map[Key]Entry{}
		for _, e := range h.Journals[i] {
			c.inJ[i][e.Key()] = e
			origins[e.Peer] = true
			c.refs[PeerRef(e.Peer)] = e.Peer
		}
	}
	for _, rec := range h.Records {
		for _, e := range rec {
			if e.Peer != "" {
				c.refs[PeerRef(e.Peer)] = e.Peer
			}
		}
	}
	c.v.Origins = len(origins)
	c.alias = map[string]int{}
	// A doomed signal (Parts.Retention) may be pruned before a replica
	// had it: each leaves one sequence of each origin it was sent to that
	// may be missing.
	for _, ops := range c.ops {
		seen := map[string]bool{}
		for _, o := range ops {
			if o.doomed() && o.Origin != "" && o.Outcome != Refused && !seen[o.Origin] {
				seen[o.Origin] = true
				c.alias[o.Origin]++
			}
		}
	}
	for k, ops := range c.ops {
		stamped := ""
		for i := range c.inJ {
			if e, ok := c.inJ[i][k]; ok {
				stamped = e.Peer
			}
		}
		// Every origin that stamped a copy may have its copy suppressed on
		// some node (the other copy came first there), not only those
		// whose copy replay leaves out.
		seen := map[string]bool{}
		for _, o := range ops {
			if len(ops) > 1 && stamped != "" && o.Origin != "" && !seen[o.Origin] && o.Outcome != Refused {
				seen[o.Origin] = true
				c.alias[o.Origin]++
			}
		}
	}
	// An ephemeral node killed may take signals with it that nobody
	// journaled or delivered; a later signal of it that got out (another
	// peer delivered it, or it was journaled) is released without them
	// after dep_wait. Each such lost signal leaves one sequence of its
	// origin that may be missing, like a retry alias.
	recorded := map[Key]bool{}
	for _, rec := range h.Records {
		for _, r := range rec {
			recorded[r.Key()] = true
		}
	}
	for k, ops := range c.ops {
		if recorded[k] || slices.ContainsFunc(c.inJ, func(j map[Key]Entry) bool { _, ok := j[k]; return ok }) {
			continue
		}
		for _, o := range ops {
			if e := o.Ephemeral - 1; e >= 0 && e < len(h.Ephemeral) && h.Ephemeral[e].tookAlong() && o.Origin != "" && o.Outcome != Refused {
				c.alias[o.Origin]++
			}
		}
	}
	if h.Nodes > 0 {
		c.v.Journaled = len(h.Journals[0])
	}
}

// mustExist says whether a key must be on every replica: a journaled
// publish was acknowledged (or its quorum wait timed out: it is journaled)
// on a node that stays, or that left cleanly, or with a quorum ack; or a
// persistent node delivered it (then it ends in the journal even if its
// ephemeral origin left by kill -9).
func (c *checker) mustExist(k Key) (bool, Op) {
	for _, o := range c.ops[k] {
		if !o.journaled() || (o.Outcome != Acked && o.Outcome != QuorumTimeout) || o.doomed() {
			continue
		}
		if o.Node >= 0 || strings.HasPrefix(o.Consistency, "quorum") && o.Outcome == Acked {
			return true, o
		}
		if e := o.Ephemeral - 1; e >= 0 && e < len(c.h.Ephemeral) && c.h.Ephemeral[e].End == "term" {
			return true, o
		}
		for _, rec := range c.h.Records {
			for _, r := range rec {
				if r.Key() == k {
					return true, o
				}
			}
		}
	}
	return false, Op{}
}

// checkDurable: every signal that must exist is on every replica, and
// every acknowledged Quorum(k) is on at least k+1.
func (c *checker) checkDurable() {
	keys := make([]Key, 0, len(c.ops))
	for k := range c.ops {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		must, o := c.mustExist(k)
		if !must {
			continue
		}
		on := 0
		for i := 0; i < c.h.Nodes; i++ {
			if _, ok := c.inJ[i][k]; ok {
				on++
			} else {
				c.add(Anomaly{Kind: "lost", ID: k.ID, Source: k.Source, Node: i, Detail: fmt.Sprintf("%s publish at %s answered %s, not in this journal%s", o.Consistency, o.where(), o.Outcome, c.reused(k))})
			}
		}
		if q, ok := strings.CutPrefix(o.Consistency, "quorum:"); ok && o.Outcome == Acked {
			c.v.QuorumAcked++
			var want int
			fmt.Sscan(q, &want)
			if on < want+1 {
				c.add(Anomaly{Kind: "quorum", ID: k.ID, Source: k.Source, Node: o.Node, Detail: fmt.Sprintf("acked %s but on %d replicas", o.Consistency, on)})
			}
		}
	}
}

// expires says whether k was published doomed (Parts.Retention), and
// when it expired (Unix nanoseconds).
func (c *checker) expires(k Key) (int64, bool) {
	for _, o := range c.ops[k] {
		if o.doomed() {
			return o.Expires, true
		}
	}
	return 0, false
}

// checkRetention: with doomed ops, every node pruned journal entries (the
// part ran on every replica, during the faults).
func (c *checker) checkRetention() {
	if c.h.Doomed == 0 {
		return
	}
	for i := 0; i < c.h.Nodes; i++ {
		if i >= len(c.h.Pruned) || c.h.Pruned[i]["signals"] == 0 {
			c.add(Anomaly{Kind: "retention", Node: i, Detail: fmt.Sprintf("%d ops were published doomed; this node pruned none", c.h.Doomed)})
		}
	}
}

// reused notes that a key's id was published under another source too.
func (c *checker) reused(k Key) string {
	for _, src := range []string{srcMain, srcAlt} {
		if _, ok := c.ops[Key{src, k.ID}]; ok && src != k.Source {
			return " (its id was also published under " + src + ")"
		}
	}
	return ""
}

func (o Op) where() string {
	if o.Node < 0 {
		return fmt.Sprintf("ephemeral node %d", o.Ephemeral)
	}
	return fmt.Sprintf("node %d", o.Node)
}

// checkJournals: journaled signals only, published and not refused, with
// the content published and the origin it was published on; per origin,
// sequences 1..n each once; all journals equal, in one replay order.
func (c *checker) checkJournals() {
	for i := 0; i < c.h.Nodes; i++ {
		seqs := map[string]map[uint64]Key{}
		for _, e := range c.h.Journals[i] {
			c.checkEntry(i, e, "journal")
			m, err := e.Meta()
			if err != nil || m.Weak() || c.ownHostile(e) {
				continue // the hostile node's sequences have holes on purpose
			}
			if seqs[m.Origin] == nil {
				seqs[m.Origin] = map[uint64]Key{}
			}
			if other, dup := seqs[m.Origin][m.Seq]; dup {
				c.add(Anomaly{Kind: "gap", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("origin %s sequence %d also names %s", short(m.Origin), m.Seq, other)})
			}
			seqs[m.Origin][m.Seq] = e.Key()
		}
		for o, s := range seqs {
			var top uint64
			for q := range s {
				top = max(top, q)
			}
			var missing []uint64
			for q := uint64(1); q <= top; q++ {
				if _, ok := s[q]; !ok {
					missing = append(missing, q)
				}
			}
			if len(missing) > c.alias[o] {
				c.add(Anomaly{Kind: "gap", Node: i, Detail: fmt.Sprintf("origin %s: sequences %v missing from this journal (it holds %d of that origin up to %d; %d retry aliases or lost with a kill)", short(o), head(missing), len(s), top, c.alias[o])})
			}
		}
		if i == 0 {
			continue
		}
		keys := func(j []Entry) []Key { // the retained signals: a doomed one may be pruned on one and not yet on another
			out := make([]Key, 0, len(j))
			for _, e := range j {
				if _, doomed := c.expires(e.Key()); !doomed {
					out = append(out, e.Key())
				}
			}
			return out
		}
		a, b := keys(c.h.Journals[0]), keys(c.h.Journals[i])
		if !slices.Equal(a, b) {
			c.add(Anomaly{Kind: "divergent", Node: i, Detail: fmt.Sprintf("journal of %d signals differs from node 0's %d (%s)", len(b), len(a), firstDiff(a, b))})
		}
		for k, e := range c.inJ[i] {
			if f, ok := c.inJ[0][k]; ok && f != e {
				c.add(Anomaly{Kind: "content", ID: k.ID, Source: k.Source, Node: i, Detail: fmt.Sprintf("differs from node 0's copy: %+v vs %+v", e, f)})
			}
		}
	}
}

// checkEntry checks one journaled or delivered signal against its publishes.
func (c *checker) checkEntry(i int, e Entry, where string) {
	if e.Source == HostileSource {
		if !c.ownHostile(e) {
			c.checkHostileEntry(i, e, where)
		}
		return
	}
	ops, ok := c.ops[e.Key()]
	if !ok {
		c.add(Anomaly{Kind: "phantom", ID: e.ID, Source: e.Source, Node: i, Detail: "in the " + where + ", never published"})
		return
	}
	var refused, weak, content, origin = true, true, true, true
	for _, o := range ops {
		refused = refused && o.Outcome == Refused
		weak = weak && !o.journaled()
		content = content && (o.Type != e.Type || o.Sum != e.Sum || o.Cause != e.Cause)
		origin = origin && o.Origin != "" && e.Peer != o.Origin
	}
	switch {
	case refused:
		c.add(Anomaly{Kind: "phantom", ID: e.ID, Source: e.Source, Node: i, Detail: "in the " + where + ", but its publish was refused: " + ops[0].Err})
	case weak && where == "journal":
		c.add(Anomaly{Kind: "phantom", ID: e.ID, Source: e.Source, Node: i, Detail: "a weak signal in the journal"})
	case content:
		c.add(Anomaly{Kind: "content", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("%s holds type %q, data %s, cause %q; published %q, %s, %q", where, e.Type, e.Sum, e.Cause, ops[0].Type, ops[0].Sum, ops[0].Cause)})
	case origin && !weak:
		c.add(Anomaly{Kind: "origin", ID: e.ID, Source: e.Source, Node: i, Detail: fmt.Sprintf("%s says origin %s, published on %s", where, short(e.Peer), ops[0].where())})
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 5)] }

func short(peer string) string {
	if len(peer) > 10 {
		return "…" + peer[len(peer)-6:]
	}
	return peer
}

func firstDiff(a, b []Key) string {
	for k := 0; k < min(len(a), len(b)); k++ {
		if a[k] != b[k] {
			return fmt.Sprintf("first difference at %d: %s vs %s", k, a[k], b[k])
		}
	}
	return "one is a prefix of the other"
}
