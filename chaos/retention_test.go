package chaos

import (
	"slices"
	"testing"
)

// retained is the good history with retention on: every node pruned, and
// the record lines carry times (100, 200, ...).
func retained() History {
	h := good()
	h.Doomed = 1
	h.Pruned = []map[string]float64{{"signals": 1}, {"signals": 1}, {"signals": 1}}
	for i := range h.Records {
		for k := range h.Records[i] {
			h.Records[i][k].T = int64(100 * (k + 1))
		}
	}
	return h
}

// doom marks the op of id doomed, expired at exp.
func doom(h *History, id string, exp int64) {
	for k := range h.Ops {
		if h.Ops[k].ID == id {
			h.Ops[k].Expires = exp
		}
	}
}

// A doomed signal (Parts.Retention) pruned from every journal, which one
// node never delivered, is no anomaly; the same signal retained is lost,
// and its hole a gap and a FIFO and causal break.
func TestCheckRestrictsToRetainedSignals(t *testing.T) {
	h := retained()
	doom(&h, "a", 1)
	for i := range h.Journals {
		h.Journals[i] = drop("a")(h.Journals[i])
	}
	h.Records[2] = drop("a")(h.Records[2])
	if v := Check(h); !v.OK {
		t.Fatalf("a doomed signal pruned everywhere, one node never had it: %v", v.Anomalies)
	}
	doom(&h, "a", 0)
	got := kinds(Check(h))
	for _, k := range []string{"lost", "gap", "fifo", "causal"} {
		if !slices.Contains(got, k) {
			t.Errorf("the same signal retained: want %q, got %v", k, got)
		}
	}
}

// A doomed cause delivered after its effect is excused only when it had
// expired before the effect was delivered.
func TestCheckExcusesALateCauseOnlyPastRetention(t *testing.T) {
	h := retained()
	rec := h.Records[0] // Start, a, b, q, a2, w at 100, 200, ...
	rec[1], rec[2] = rec[2], rec[1]
	rec[1].T, rec[2].T = 200, 300 // b at 200, then a at 300
	doom(&h, "a", 150)
	if v := Check(h); !v.OK {
		t.Fatalf("the cause expired (150) before the effect was delivered (200): %v", v.Anomalies)
	}
	doom(&h, "a", 250)
	if got := kinds(Check(h)); !slices.Contains(got, "causal") {
		t.Fatalf("the cause expired (250) after the effect was delivered (200): want causal, got %v", got)
	}
}

// With doomed ops, a node that pruned nothing means the part did not run.
func TestCheckRetentionRan(t *testing.T) {
	h := retained()
	if v := Check(h); !v.OK {
		t.Fatalf("every node pruned: %v", v.Anomalies)
	}
	h.Pruned[1] = map[string]float64{"blocks": 3}
	if got := kinds(Check(h)); !slices.Equal(got, []string{"retention"}) {
		t.Fatalf("node 1 pruned no entry: want one retention anomaly, got %v", got)
	}
	if v := check(h, map[string]bool{"retention": true}); !v.OK {
		t.Fatalf("only the retention rule sees it: %v", v.Anomalies)
	}
	h.Doomed = 0
	if v := Check(h); !v.OK {
		t.Fatalf("no retention: %v", v.Anomalies)
	}
}
