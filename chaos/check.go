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
	// Refused: the node answered with an error: nothing was published.
	Refused Outcome = "refused"
	// Unknown: no answer (the node was down, paused or cut from the
	// harness): the signal may or may not exist.
	Unknown Outcome = "unknown"
)

// Op is one publish the workload made.
type Op struct {
	ID          string        `json:"id"`
	Node        int           `json:"node"`
	Consistency string        `json:"consistency"` // eventual, weak, quorum:K
	Cause       string        `json:"cause,omitempty"`
	At          time.Duration `json:"at"`   // since the workload started
	Took        time.Duration `json:"took"` // until the answer
	Outcome     Outcome       `json:"outcome"`
	Err         string        `json:"err,omitempty"`
}

func (o Op) journaled() bool { return o.Consistency != "weak" }

// mustExist says whether the signal must be on every replica.
func (o Op) mustExist() bool {
	return o.journaled() && (o.Outcome == Acked || o.Outcome == QuorumTimeout)
}

// History is what the checker reads: every publish, every replica's
// journal (ids in replay order) and every node's delivery record.
type History struct {
	Nodes    int
	Ops      []Op
	Journals [][]string // per node
	Records  [][]Entry  // per node
	// Ends says, per node, how each process but the last ended, in order
	// ("kill", "term", "exit"): the Start lines of its record follow them.
	Ends [][]string
}

// Anomaly is one thing the checker found wrong.
type Anomaly struct {
	Kind   string `json:"kind"`
	ID     string `json:"id,omitempty"`
	Node   int    `json:"node"`
	Detail string `json:"detail"`
}

func (a Anomaly) String() string {
	return fmt.Sprintf("%s: node %d: %s %s", a.Kind, a.Node, a.ID, a.Detail)
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
	Effects     int             `json:"effects"`      // journaled effects whose order was checked at every node
	Redelivered int             `json:"redelivered"`  // Again lines, each after a kill -9
	Deliveries  int             `json:"deliveries"`   // first deliveries, all nodes
}

const maxPerKind = 20 // anomalies kept per kind (the count is exact)

// Check verifies a history: (1) no signal whose publish was acknowledged is
// missing from any replica's journal; (2) all journals hold the same
// signals in the same replay order, and none holds a signal nobody
// published; (3) every node's persistent subscription received each
// journaled signal once, and received a signal twice only right after a
// kill -9 of its process (at least once across a crash); a weak signal at
// most once; (4) no node delivered an effect before its cause; (5) every
// quorum publish that succeeded is on at least k+1 replicas.
func Check(h History) Verdict {
	v := Verdict{ByOutcome: map[Outcome]int{}}
	count := map[string]int{}
	add := func(a Anomaly) {
		count[a.Kind]++
		if count[a.Kind] <= maxPerKind {
			v.Anomalies = append(v.Anomalies, a)
		}
	}
	ops := map[string]Op{}
	for _, o := range h.Ops {
		ops[o.ID] = o
		v.ByOutcome[o.Outcome]++
	}
	v.Published = len(h.Ops)
	inJournal := make([]map[string]bool, h.Nodes)
	for i := range inJournal {
		inJournal[i] = map[string]bool{}
		for _, id := range h.Journals[i] {
			inJournal[i][id] = true
		}
	}
	if h.Nodes > 0 {
		v.Journaled = len(h.Journals[0])
	}
	checkDurable(h, inJournal, add, &v)
	checkJournals(h, ops, add)
	// (3) and (4)
	for i := 0; i < h.Nodes; i++ {
		checkRecord(h, i, ops, inJournal[i], add, &v)
	}
	kinds := make([]string, 0, len(count))
	for k := range count {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if count[k] > maxPerKind {
			v.Anomalies = append(v.Anomalies, Anomaly{Kind: k, Node: -1, Detail: fmt.Sprintf("%d in all, %d shown", count[k], maxPerKind)})
		}
	}
	v.OK = len(v.Anomalies) == 0
	return v
}

// checkDurable: (1) every signal that must exist is on every replica, and
// (5) every acknowledged Quorum(k) is on at least k+1.
func checkDurable(h History, inJournal []map[string]bool, add func(Anomaly), v *Verdict) {
	for _, o := range h.Ops {
		if !o.mustExist() {
			continue
		}
		on := 0
		for i := 0; i < h.Nodes; i++ {
			if inJournal[i][o.ID] {
				on++
			} else {
				add(Anomaly{Kind: "lost", ID: o.ID, Node: i, Detail: fmt.Sprintf("%s publish at node %d answered %s, not in this journal", o.Consistency, o.Node, o.Outcome)})
			}
		}
		if k, ok := strings.CutPrefix(o.Consistency, "quorum:"); ok && o.Outcome == Acked {
			v.QuorumAcked++
			var want int
			fmt.Sscan(k, &want)
			if on < want+1 {
				add(Anomaly{Kind: "quorum", ID: o.ID, Node: o.Node, Detail: fmt.Sprintf("acked %s but on %d replicas", o.Consistency, on)})
			}
		}
	}
}

// checkJournals: (2) the journals are equal, in replay order, and hold only
// journaled signals that were published and not refused.
func checkJournals(h History, ops map[string]Op, add func(Anomaly)) {
	for i := 0; i < h.Nodes; i++ {
		for _, id := range h.Journals[i] {
			o, ok := ops[id]
			switch {
			case !ok:
				add(Anomaly{Kind: "phantom", ID: id, Node: i, Detail: "in the journal, never published"})
			case !o.journaled():
				add(Anomaly{Kind: "phantom", ID: id, Node: i, Detail: "a weak signal in the journal"})
			case o.Outcome == Refused:
				add(Anomaly{Kind: "phantom", ID: id, Node: i, Detail: "in the journal, but its publish was refused: " + o.Err})
			}
		}
		if i > 0 && !slices.Equal(h.Journals[i], h.Journals[0]) {
			add(Anomaly{Kind: "divergent", Node: i, Detail: fmt.Sprintf("journal of %d signals differs from node 0's %d (%s)",
				len(h.Journals[i]), len(h.Journals[0]), firstDiff(h.Journals[0], h.Journals[i]))})
		}
	}
}

// checkRecord: (3) node i's subscription got each journaled signal once,
// again only after a kill -9, and (4) no effect before its cause.
func checkRecord(h History, i int, ops map[string]Op, journal map[string]bool, add func(Anomaly), v *Verdict) {
	pos := map[string]int{} // first delivery's position
	segment, n := -1, 0
	for _, e := range h.Records[i] {
		if e.Start {
			segment++
			continue
		}
		o, known := ops[e.ID]
		if !known {
			add(Anomaly{Kind: "phantom", ID: e.ID, Node: i, Detail: "delivered, never published"})
			continue
		}
		if _, seen := pos[e.ID]; seen || e.Again {
			afterKill := segment > 0 && segment-1 < len(h.Ends[i]) && h.Ends[i][segment-1] == "kill"
			if !afterKill || !o.journaled() {
				add(Anomaly{Kind: "duplicate", ID: e.ID, Node: i, Detail: fmt.Sprintf("delivered again in process %d, which did not follow a kill -9", segment+1)})
			}
			v.Redelivered++
			continue
		}
		pos[e.ID] = n
		n++
		v.Deliveries++
	}
	for id := range journal {
		if _, ok := pos[id]; !ok {
			add(Anomaly{Kind: "undelivered", ID: id, Node: i, Detail: "in this node's journal, never delivered to its subscription"})
		}
	}
	for id, p := range pos {
		o := ops[id]
		if o.Cause == "" || !o.journaled() {
			continue
		}
		cp, ok := pos[o.Cause]
		switch {
		case !ok:
			add(Anomaly{Kind: "causal", ID: id, Node: i, Detail: "effect delivered, its cause " + o.Cause + " never"})
		case cp > p:
			add(Anomaly{Kind: "causal", ID: id, Node: i, Detail: fmt.Sprintf("effect delivered at %d, before its cause %s at %d", p, o.Cause, cp)})
		default:
			v.Effects++
		}
	}
}

func firstDiff(a, b []string) string {
	for k := 0; k < min(len(a), len(b)); k++ {
		if a[k] != b[k] {
			return fmt.Sprintf("first difference at %d: %s vs %s", k, a[k], b[k])
		}
	}
	return "one is a prefix of the other"
}

// Explain returns the smallest history that shows the anomalies: the
// publishes of the signals they name and of their causes, and the faults
// under way when those publishes were made.
func Explain(h History, faults []Fault, v Verdict) string {
	ids := map[string]bool{}
	ops := map[string]Op{}
	for _, o := range h.Ops {
		ops[o.ID] = o
	}
	for _, a := range v.Anomalies {
		if a.ID != "" {
			ids[a.ID] = true
			if c := ops[a.ID].Cause; c != "" {
				ids[c] = true
			}
		}
	}
	var b strings.Builder
	var times []time.Duration
	for _, o := range h.Ops {
		if ids[o.ID] {
			fmt.Fprintf(&b, "  %7.3fs publish %s at node %d (%s, cause %q): %s %s\n", o.At.Seconds(), o.ID, o.Node, o.Consistency, o.Cause, o.Outcome, o.Err)
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
	for i := 0; i < h.Nodes; i++ {
		for k, e := range h.Records[i] {
			if ids[e.ID] {
				fmt.Fprintf(&b, "  node %d record line %d: %s again=%v\n", i, k+1, e.ID, e.Again)
			}
		}
		if len(h.Ends[i]) > 0 {
			fmt.Fprintf(&b, "  node %d processes ended by: %s\n", i, strings.Join(h.Ends[i], ", "))
		}
	}
	return b.String()
}
