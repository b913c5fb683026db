package chaos

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// causal is the bounded metadata "<seq>/<lamport>/<deps>", deps given as
// origin, seq pairs.
func causal(seq uint64, deps ...any) string {
	var d []string
	for k := 0; k+1 < len(deps); k += 2 {
		d = append(d, fmt.Sprintf("%s:%d", PeerRef(deps[k].(string)), deps[k+1]))
	}
	return fmt.Sprintf("%d/%d/%s", seq, seq, strings.Join(d, ","))
}

// sig is the entry of a journaled signal of the good history.
func sig(id, origin string, seq uint64, cause string, deps ...any) Entry {
	typ := "chaos.cause"
	if cause != "" {
		typ = "chaos.effect"
	}
	return Entry{Source: srcMain, ID: id, Type: typ, Cause: cause, Peer: origin, Causal: causal(seq, deps...), Sum: "sum-" + id}
}

func op(id string, node int, origin, consistency, cause string, out Outcome) Op {
	typ := "chaos.cause"
	if cause != "" {
		typ = "chaos.effect"
	}
	o := Op{Source: srcMain, ID: id, Type: typ, Sum: "sum-" + id, Node: node, Origin: origin, Consistency: consistency, Cause: cause, Outcome: out, Live: true}
	if out == Acked {
		o.Status = 202
	}
	return o
}

// good is a history of three nodes (origins A, B, C) that passes: a cause
// and its effect, a second signal of A, a quorum publish, a weak signal
// that one node missed, an unknown publish that never happened, an
// ephemeral node's signal that nobody received before it was killed, and
// a redelivery right after a kill -9.
func good() History {
	a := sig("a", "A", 1, "")
	b := sig("b", "B", 1, "a", "A", 1)
	q := sig("q", "C", 1, "")
	a2 := sig("a2", "A", 2, "")
	j := []Entry{a, b, q, a2}
	w := Entry{Source: srcMain, ID: "w", Type: "chaos.cause", Peer: "A", Sum: "sum-w"}
	rec := func(extra ...Entry) []Entry {
		return append([]Entry{{Start: true}, a, b, q, a2}, extra...)
	}
	again := q
	again.Again = true
	eph := op("e", -1, "E", "eventual", "", Acked)
	eph.Ephemeral = 1
	return History{
		Nodes: 3,
		Ops: []Op{
			op("a", 0, "A", "eventual", "", Acked),
			op("b", 1, "B", "eventual", "a", Acked),
			op("q", 2, "C", "quorum:2", "", Acked),
			op("a2", 0, "A", "eventual", "", Acked),
			op("w", 0, "A", "weak", "", Acked),
			op("u", 1, "B", "eventual", "", Unknown),
			eph,
		},
		Journals:  [][]Entry{j, slices.Clone(j), slices.Clone(j)},
		Records:   [][]Entry{rec(w), rec(Entry{Start: true}, again), rec()},
		Ends:      [][]string{{"term"}, {"kill", "term"}, {"term"}},
		Ephemeral: []Ephemeral{{Peer: "E", End: "kill"}},
		Counters:  []map[string]float64{{"missing_cause": 1}, nil, nil},
		Logs:      [][]string{{`level=WARN msg="node: bootstrap peer unreachable"`}, nil, nil},
		Expect:    Expect{Counters: []string{"missing_cause"}, Logs: []string{"bootstrap peer unreachable"}},
	}
}

func TestCheckPassesAGoodHistory(t *testing.T) {
	v := Check(good())
	if !v.OK {
		t.Fatalf("anomalies in a good history: %v", v.Anomalies)
	}
	if v.Redelivered != 1 || v.QuorumAcked != 1 || v.Effects != 3 || v.Journaled != 4 || v.Origins != 3 || v.HB != 9 {
		t.Fatalf("figures: %+v", v)
	}
}

// everywhere applies f to every journal and record.
func everywhere(h *History, f func([]Entry) []Entry) {
	for i := range h.Journals {
		h.Journals[i] = f(h.Journals[i])
		h.Records[i] = f(h.Records[i])
	}
}

func drop(key string) func([]Entry) []Entry {
	return func(s []Entry) []Entry {
		return slices.DeleteFunc(slices.Clone(s), func(e Entry) bool { return e.ID == key })
	}
}

// Each way of breaking the good history is caught, under its own kind;
// with that rule switched off (a mutation of the checker), it is not.
func TestCheckFindsEachAnomaly(t *testing.T) {
	cases := []struct {
		name, kind string
		mut        func(h *History)
	}{
		{"acked signal missing on a replica", "lost", func(h *History) {
			h.Journals[2] = drop("a2")(h.Journals[2])
			h.Records[2] = drop("a2")(h.Records[2])
		}},
		{"quorum-timeout signal missing", "lost", func(h *History) {
			h.Ops = append(h.Ops, op("t", 1, "B", "quorum:1", "", QuorumTimeout))
		}},
		{"ephemeral signal delivered by gossip, then lost", "lost", func(h *History) {
			h.Records[1] = append(h.Records[1], Entry{Source: srcMain, ID: "e", Type: "chaos.cause", Peer: "E", Causal: causal(1), Sum: "sum-e"})
		}},
		{"ephemeral node left cleanly, its signal lost", "lost", func(h *History) { h.Ephemeral[0].End = "term" }},
		{"journals in different orders", "divergent", func(h *History) {
			h.Journals[1] = []Entry{h.Journals[1][1], h.Journals[1][0], h.Journals[1][2], h.Journals[1][3]}
		}},
		{"a journal entry nobody published", "phantom", func(h *History) {
			everywhere(h, func(s []Entry) []Entry { return append(s, sig("x", "A", 3, "")) })
		}},
		{"a refused publish in the journal", "phantom", func(h *History) {
			h.Ops[5].Outcome = Refused
			everywhere(h, func(s []Entry) []Entry { return append(s, sig("u", "B", 2, "")) })
		}},
		{"a weak signal journaled", "phantom", func(h *History) {
			h.Journals[0] = append(h.Journals[0], Entry{Source: srcMain, ID: "w", Type: "chaos.cause", Sum: "sum-w"})
		}},
		{"the same id under another source is another signal", "phantom", func(h *History) {
			x := sig("a", "A", 3, "")
			x.Source = srcAlt
			everywhere(h, func(s []Entry) []Entry { return append(s, x) })
		}},
		{"content differs from what was published", "content", func(h *History) {
			everywhere(h, func(s []Entry) []Entry {
				s = slices.Clone(s)
				s[3].Sum = "other"
				return s
			})
		}},
		{"content differs between replicas", "content", func(h *History) { h.Journals[2][0].Causal = causal(1, "C", 1) }},
		{"journaled with another origin", "origin", func(h *History) {
			everywhere(h, func(s []Entry) []Entry {
				s = slices.Clone(s)
				s[1].Peer = "C"
				s[1].Causal = causal(2, "A", 1)
				return s
			})
		}},
		{"a gap in one origin's sequences", "gap", func(h *History) {
			h.Journals[0][3].Causal = causal(3)
		}},
		{"journaled, never delivered", "undelivered", func(h *History) { h.Records[2] = h.Records[2][:4] }},
		{"delivered, not journaled", "unjournaled", func(h *History) {
			h.Journals[2] = h.Journals[2][:3]
			h.Ops[3].Outcome = Unknown
			for i := 0; i < 2; i++ {
				h.Journals[i] = h.Journals[i][:3]
			}
		}},
		{"delivered twice without a crash", "duplicate", func(h *History) {
			x := h.Records[0][1]
			x.Again = true
			h.Records[0] = append(h.Records[0], x)
		}},
		{"redelivered after a clean restart", "duplicate", func(h *History) { h.Ends[1] = []string{"term", "term"} }},
		{"redelivered after a new handling", "duplicate", func(h *History) {
			r := h.Records[1]
			h.Records[1] = []Entry{{Start: true}, r[1], r[2], r[3], {Start: true}, r[4], r[6]}
		}},
		{"redelivered, not handled by the previous process", "duplicate", func(h *History) {
			r := h.Records[1]
			again := r[1]
			again.Again = true
			h.Ends[1] = []string{"kill", "kill", "term"}
			h.Records[1] = []Entry{{Start: true}, r[1], r[2], r[3], r[4], {Start: true}, {Start: true}, again}
		}},
		{"redelivered twice", "duplicate", func(h *History) { h.Records[1] = append(h.Records[1], h.Records[1][6]) }},
		{"an origin's signals out of sequence", "fifo", func(h *History) {
			r := h.Records[2]
			h.Records[2] = []Entry{r[0], r[4], r[1], r[2], r[3]}
		}},
		{"effect before its cause", "causal", func(h *History) {
			r := h.Records[1]
			h.Records[1] = append([]Entry{r[0], r[2], r[1]}, r[3:]...)
		}},
		{"before a dependency of the metadata", "causal", func(h *History) {
			everywhere(h, func(s []Entry) []Entry {
				s = slices.Clone(s)
				for k := range s {
					if s[k].ID == "q" {
						s[k].Causal = causal(1, "A", 2)
					}
				}
				return s
			})
		}},
		{"a live node refused a publish", "unavailable", func(h *History) {
			h.Ops = append(h.Ops, Op{Source: srcMain, ID: "r", Node: 2, Consistency: "eventual", Outcome: Refused, Status: 400, Live: true, Err: "too large: field meshclock"})
		}},
		{"a live node failed a publish", "unavailable", func(h *History) {
			h.Ops = append(h.Ops, Op{Source: srcMain, ID: "r", Node: 2, Consistency: "eventual", Outcome: Unknown, Status: 503, Live: true})
		}},
		{"a subscriber overflowed", "metric", func(h *History) { h.Counters[1] = map[string]float64{"subscriber_overflow": 3} }},
		{"a cause went missing where nothing explains it", "metric", func(h *History) { h.Expect.Counters = nil }},
		{"an unexpected error in a log", "log", func(h *History) {
			h.Logs[2] = []string{`level=ERROR msg="node: journal write failed; the signals stay in the outbox until restart"`}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := good()
			c.mut(&h)
			if !slices.Contains(kinds(Check(h)), c.kind) {
				t.Fatalf("want a %q anomaly, got %v", c.kind, Check(h).Anomalies)
			}
			if slices.Contains(kinds(check(h, map[string]bool{c.kind: true})), c.kind) {
				t.Fatalf("rule %q switched off still reports", c.kind)
			}
			v := Check(h)
			if ex := Explain(h, nil, v); c.kind != "divergent" && c.kind != "gap" && c.kind != "metric" && c.kind != "log" &&
				!strings.Contains(ex, "publish") && c.kind != "phantom" {
				t.Fatalf("the explanation names no publish:\n%s", ex)
			}
		})
	}
}

func kinds(v Verdict) []string {
	var out []string
	for _, a := range v.Anomalies {
		out = append(out, a.Kind)
	}
	return out
}

// Some defects only one rule sees: with that rule switched off (a
// mutation of the checker), the history passes.
func TestCheckMutationsPass(t *testing.T) {
	cases := []struct {
		kind string
		mut  func(h *History)
	}{
		{"duplicate", func(h *History) { h.Ends[1] = []string{"term", "term"} }},
		{"unavailable", func(h *History) {
			h.Ops = append(h.Ops, Op{Source: srcMain, ID: "r", Node: 2, Consistency: "eventual", Outcome: Refused, Status: 400, Live: true})
		}},
		{"unjournaled", func(h *History) {
			h.Ops = append(h.Ops, op("v", 1, "B", "eventual", "", Unknown))
			h.Records[1] = append(h.Records[1], sig("v", "B", 2, ""))
		}},
		{"content", func(h *History) { h.Ops[3].Sum = "other" }},
		{"metric", func(h *History) { h.Counters[1] = map[string]float64{"journal_write": 1} }},
		{"log", func(h *History) { h.Logs[1] = []string{`level=ERROR msg="node: save subscription cursor"`} }},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			h := good()
			c.mut(&h)
			if got := kinds(Check(h)); !slices.Contains(got, c.kind) {
				t.Fatalf("want %q, got %v", c.kind, Check(h).Anomalies)
			}
			if v := check(h, map[string]bool{c.kind: true}); !v.OK {
				t.Fatalf("only %q should see this history, but: %v", c.kind, v.Anomalies)
			}
		})
	}
}

func TestCheckCapsAnomaliesPerKind(t *testing.T) {
	h := good()
	for i := 0; i < 50; i++ {
		h.Ops = append(h.Ops, op(fmt.Sprintf("m%d", i), 0, "A", "eventual", "", Acked))
	}
	v := Check(h)
	if v.OK || len(v.Anomalies) != maxPerKind+1 || !strings.Contains(v.Anomalies[maxPerKind].Detail, "150 in all") {
		t.Fatalf("got %d anomalies, last %v", len(v.Anomalies), v.Anomalies[len(v.Anomalies)-1])
	}
}

// clockText encodes the first format: a vector clock in base64url.
func clockText(entries ...any) string {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(entries)/2))
	for k := 0; k+1 < len(entries); k += 2 {
		p := entries[k].(string)
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
		b = binary.AppendUvarint(b, uint64(entries[k+1].(int)))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestParseMetaBothFormats(t *testing.T) {
	m, err := ParseMeta("B", "", clockText("A", 4, "B", 7))
	if err != nil || m.Seq != 7 || len(m.Deps) != 1 || m.Deps[0] != (Dep{Origin: "A", Seq: 4}) {
		t.Fatalf("clock: %+v %v", m, err)
	}
	ref := PeerRef("12D3KooWDiVcdxfjSw2rj8KiqXE2kr1B3JwWf2UEgTtTXbtk6p5p")
	if len(ref) != 11 {
		t.Fatalf("ref %q", ref)
	}
	m, err = ParseMeta("B", "7/19/"+ref+":4,"+PeerRef("C")+":2", "ignored")
	if err != nil || m.Seq != 7 || m.Lamport != 19 || len(m.Deps) != 2 || m.Deps[0] != (Dep{Ref: ref, Seq: 4}) {
		t.Fatalf("causal: %+v %v", m, err)
	}
	if m, err := ParseMeta("B", "3/3/", ""); err != nil || m.Seq != 3 || len(m.Deps) != 0 {
		t.Fatalf("no deps: %+v %v", m, err)
	}
	if m, err := ParseMeta("B", "", ""); err != nil || !m.Weak() {
		t.Fatalf("weak: %+v %v", m, err)
	}
	for _, bad := range []string{"x/1/", "1/1", "0/1/", "1/1/short:1", "1/1/" + ref + ":0"} {
		if _, err := ParseMeta("B", bad, ""); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := ParseMeta("B", "", clockText("A", 1)); err == nil {
		t.Error("a clock without its origin parsed")
	}
	// The old format's history checks as the new one does.
	h := good()
	for i := range h.Journals {
		for _, s := range [][]Entry{h.Journals[i], h.Records[i]} {
			for k := range s {
				if s[k].Causal == "" {
					continue
				}
				m, _ := s[k].Meta()
				ents := []any{s[k].Peer, int(m.Seq)}
				for _, d := range m.Deps {
					ents = append(ents, "A", int(d.Seq)) // good's only dependency is on A
				}
				s[k].Causal, s[k].Clock = "", clockText(ents...)
			}
		}
	}
	if v := Check(h); !v.OK {
		t.Fatalf("old format: %v", v.Anomalies)
	}
}

// A publish retried on another node may have been stamped by both: the
// first origin's sequence number then names a copy no replica keeps
// (identity is (source, id)). One hole per such retry is excused, in the
// journal, in FIFO and in happens-before; one more is not.
func TestCheckExcusesRetryAliases(t *testing.T) {
	h := good()
	r := sig("r", "C", 2, "")
	b3 := sig("b3", "B", 3, "")
	h.Ops = append(h.Ops, op("r", 1, "B", "eventual", "", Unknown), op("r", 2, "C", "eventual", "", Acked), op("b3", 1, "B", "eventual", "", Acked))
	h.Ops[len(h.Ops)-2].Retry = true
	everywhere(&h, func(s []Entry) []Entry { return append(slices.Clone(s), r, b3) })
	if v := Check(h); !v.OK {
		t.Fatalf("one retry alias: %v", v.Anomalies)
	}
	h.Ops = h.Ops[:len(h.Ops)-3]
	h.Ops = append(h.Ops, op("r", 2, "C", "eventual", "", Acked), op("b3", 1, "B", "eventual", "", Acked))
	got := kinds(Check(h))
	for _, k := range []string{"gap", "fifo", "causal"} {
		if !slices.Contains(got, k) {
			t.Errorf("no retry, same holes: want %q, got %v", k, got)
		}
	}
}

// An ephemeral node killed took its first signal along (nobody had it);
// its second got out, and the nodes delivered it without the first after
// dep_wait: the missing sequence is excused, one per signal lost that way,
// and not more.
func TestCheckExcusesWhatAKillTookAlong(t *testing.T) {
	withSecond := func(seq uint64) History {
		h := good()
		e2 := op("e2", -1, "E", "eventual", "", Acked)
		e2.Ephemeral = 1
		h.Ops = append(h.Ops, e2)
		everywhere(&h, func(s []Entry) []Entry {
			return append(slices.Clone(s), Entry{Source: srcMain, ID: "e2", Type: "chaos.cause", Peer: "E", Causal: causal(seq), Sum: "sum-e2"})
		})
		return h
	}
	if v := Check(withSecond(2)); !v.OK {
		t.Fatalf("a sequence lost with a kill is not excused: %v", v.Anomalies)
	}
	v := Check(withSecond(3)) // two missing, one lost
	if v.OK || !slices.ContainsFunc(v.Anomalies, func(a Anomaly) bool { return a.Kind == "gap" }) ||
		!slices.ContainsFunc(v.Anomalies, func(a Anomaly) bool { return a.Kind == "fifo" }) {
		t.Fatalf("two missing sequences, one signal lost with the kill: want gap and fifo, got %v", v.Anomalies)
	}
	h := withSecond(2)
	h.Ephemeral[0].End = "term-unconfirmed" // closed, but no peer confirmed its last signals: like a kill
	if v := Check(h); !v.OK {
		t.Fatalf("a hand-off that failed is excused like a kill: %v", v.Anomalies)
	}
	h.Ephemeral[0].End = "term" // left cleanly: its signals are owed
	if v := Check(h); v.OK {
		t.Fatal("an ephemeral node that left cleanly: its missing first signal is not excused")
	}
}

// An effect whose cause's only copies are later signals of its own origin
// (the client retried the cause on the effect's node, its first try lost)
// cannot come after its cause: the causal rule excuses it. The same order
// with the cause on another origin is an anomaly.
func TestCheckExcusesACauseOnlyLaterInItsOwnOrigin(t *testing.T) {
	with := func(causeOrigin string, causeSeq uint64) History {
		h := good()
		x, y := sig("x", "A", 3, "y"), sig("y", causeOrigin, causeSeq, "")
		h.Ops = append(h.Ops, op("x", 0, "A", "eventual", "y", Acked), op("y", 0, causeOrigin, "eventual", "", Acked))
		everywhere(&h, func(s []Entry) []Entry { return append(slices.Clone(s), x, y) })
		return h
	}
	if v := Check(with("A", 4)); !v.OK {
		t.Fatalf("a cause only later in the effect's own origin is not excused: %v", v.Anomalies)
	}
	v := Check(with("B", 2))
	if v.OK || !slices.ContainsFunc(v.Anomalies, func(a Anomaly) bool { return a.Kind == "causal" }) {
		t.Fatalf("an effect before its cause on another origin: want causal, got %v", v.Anomalies)
	}
}

// An effect whose cause waits, through its own origin's earlier signals
// and their causes, for a signal of the effect's origin published after
// the effect (a cycle: fault-harness seed 8050, where the cause's
// predecessor named a lost ephemeral signal that a retry later published
// on the effect's own node) cannot come after its cause: excused. The same
// order with no cycle (the retry on another origin) is an anomaly.
func TestCheckExcusesACauseThatWaitsForTheEffect(t *testing.T) {
	with := func(zOrigin string, zSeq uint64) History {
		h := good()
		x := sig("x", "A", 3, "y")       // the effect, released first
		z := sig("z", zOrigin, zSeq, "") // published after x (on A: its next)
		b2 := sig("b2", "B", 2, "z")     // the cause's predecessor, an effect of z
		y := sig("y", "B", 3, "")        // the cause
		zNode := 0
		if zOrigin == "C" {
			zNode = 2
		}
		h.Ops = append(h.Ops, op("x", 0, "A", "eventual", "y", Acked), op("z", zNode, zOrigin, "eventual", "", Acked),
			op("b2", 1, "B", "eventual", "z", Acked), op("y", 1, "B", "eventual", "", Acked))
		everywhere(&h, func(s []Entry) []Entry { return append(slices.Clone(s), x, z, b2, y) })
		return h
	}
	if v := Check(with("A", 4)); !v.OK {
		t.Fatalf("a cause that waits for the effect's own later signal is not excused: %v", v.Anomalies)
	}
	v := Check(with("C", 2))
	if v.OK || !slices.ContainsFunc(v.Anomalies, func(a Anomaly) bool { return a.Kind == "causal" }) {
		t.Fatalf("an effect before its cause with no cycle: want causal, got %v", v.Anomalies)
	}
}
