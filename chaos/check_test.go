package chaos

import (
	"slices"
	"strings"
	"testing"
)

// good is a history of three nodes that passes: a cause and its effect,
// a quorum publish, a weak signal that one node missed, an unknown publish
// that never happened, and a redelivery right after a kill -9.
func good() History {
	j := []string{"a", "b", "q"}
	rec := func(extra ...Entry) []Entry {
		return append([]Entry{{Start: true}, {ID: "a"}, {ID: "b", Cause: "a"}, {ID: "q"}}, extra...)
	}
	return History{
		Nodes: 3,
		Ops: []Op{
			{ID: "a", Consistency: "eventual", Outcome: Acked},
			{ID: "b", Consistency: "eventual", Cause: "a", Outcome: Acked},
			{ID: "q", Consistency: "quorum:2", Outcome: Acked},
			{ID: "w", Consistency: "weak", Outcome: Acked},
			{ID: "u", Consistency: "eventual", Outcome: Unknown},
		},
		Journals: [][]string{j, slices.Clone(j), slices.Clone(j)},
		Records: [][]Entry{
			rec(Entry{ID: "w"}),
			rec(Entry{Start: true}, Entry{ID: "q", Again: true}),
			rec(),
		},
		Ends: [][]string{{"term"}, {"kill", "term"}, {"term"}},
	}
}

func TestCheckPassesAGoodHistory(t *testing.T) {
	v := Check(good())
	if !v.OK {
		t.Fatalf("anomalies in a good history: %v", v.Anomalies)
	}
	if v.Redelivered != 1 || v.QuorumAcked != 1 || v.Effects != 3 || v.Journaled != 3 {
		t.Fatalf("figures: %+v", v)
	}
}

// Each way of breaking the good history is caught, under its own kind.
func TestCheckFindsEachAnomaly(t *testing.T) {
	cases := []struct {
		name, kind string
		mut        func(h *History)
	}{
		{"acked signal missing on a replica", "lost", func(h *History) {
			h.Journals[2] = []string{"a", "q"}
			h.Records[2] = []Entry{{Start: true}, {ID: "a"}, {ID: "q"}}
		}},
		{"quorum-timeout signal missing", "lost", func(h *History) {
			h.Ops = append(h.Ops, Op{ID: "t", Consistency: "quorum:1", Outcome: QuorumTimeout})
		}},
		{"journals in different orders", "divergent", func(h *History) { h.Journals[1] = []string{"b", "a", "q"} }},
		{"a journal entry nobody published", "phantom", func(h *History) {
			for i := range h.Journals {
				h.Journals[i] = append(h.Journals[i], "x")
				h.Records[i] = append(h.Records[i], Entry{ID: "x"})
			}
		}},
		{"a refused publish in the journal", "phantom", func(h *History) {
			h.Ops[4].Outcome = Refused
			for i := range h.Journals {
				h.Journals[i] = append(h.Journals[i], "u")
				h.Records[i] = append(h.Records[i], Entry{ID: "u"})
			}
		}},
		{"a weak signal journaled", "phantom", func(h *History) {
			for i := range h.Journals {
				h.Journals[i] = append(h.Journals[i], "w")
				h.Records[i] = append(h.Records[i], Entry{ID: "w"})
			}
		}},
		{"journaled, never delivered", "undelivered", func(h *History) { h.Records[2] = h.Records[2][:3] }},
		{"delivered twice without a crash", "duplicate", func(h *History) {
			h.Records[0] = append(h.Records[0], Entry{ID: "a", Again: true})
		}},
		{"redelivered after a clean restart", "duplicate", func(h *History) { h.Ends[1] = []string{"term", "term"} }},
		{"a weak signal delivered twice", "duplicate", func(h *History) {
			h.Records[0] = append(h.Records[0], Entry{ID: "w", Again: true})
		}},
		{"effect before its cause", "causal", func(h *History) {
			h.Records[1] = []Entry{{Start: true}, {ID: "b", Cause: "a"}, {ID: "a"}, {ID: "q"}}
		}},
		{"quorum acked on too few replicas", "quorum", func(h *History) {
			h.Ops[2].Consistency = "quorum:3"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := good()
			c.mut(&h)
			v := Check(h)
			if v.OK {
				t.Fatal("passed")
			}
			var kinds []string
			for _, a := range v.Anomalies {
				kinds = append(kinds, a.Kind)
			}
			if !slices.Contains(kinds, c.kind) {
				t.Fatalf("want a %q anomaly, got %v", c.kind, v.Anomalies)
			}
			if ex := Explain(h, nil, v); c.kind != "divergent" && !strings.Contains(ex, "publish") && c.kind != "phantom" {
				t.Fatalf("the explanation names no publish:\n%s", ex)
			}
		})
	}
}

func TestCheckCapsAnomaliesPerKind(t *testing.T) {
	h := good()
	for i := 0; i < 50; i++ {
		h.Ops = append(h.Ops, Op{ID: "m" + string(rune('A'+i)), Consistency: "eventual", Outcome: Acked})
	}
	v := Check(h)
	if v.OK || len(v.Anomalies) != maxPerKind+1 || !strings.Contains(v.Anomalies[maxPerKind].Detail, "150 in all") {
		t.Fatalf("got %d anomalies, last %v", len(v.Anomalies), v.Anomalies[len(v.Anomalies)-1])
	}
}
