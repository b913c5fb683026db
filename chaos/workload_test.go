package chaos

import (
	"fmt"
	"path/filepath"
	"testing"
)

// Each op takes the same draws whatever the timing: a workload that has
// causes to pick from and one that has none draw the same nodes and
// consistency levels, op after op.
func TestWorkloadDrawsIndependentOfTiming(t *testing.T) {
	dir := t.TempDir()
	mk := func() *workload {
		c := &cluster{}
		for i := 0; i < 3; i++ {
			c.procs = append(c.procs, &proc{i: i, record: filepath.Join(dir, fmt.Sprint("none-", i))})
		}
		return newWorkload(c, 42, Spec{Rate: 10}, Setup{OutOfBand: true, Reuse: true})
	}
	rich, poor := mk(), mk()
	for k := 0; k < 50; k++ {
		rich.acked = append(rich.acked, Op{Source: srcMain, ID: fmt.Sprint("x", k), Node: k % 3, Consistency: "eventual"})
	}
	causes, reuses := 0, 0
	for k := 0; k < 500; k++ {
		a, b := rich.next(k, 0), poor.next(k, 0)
		if a.Node != b.Node || a.Consistency != b.Consistency {
			t.Fatalf("op %d: %+v vs %+v", k, a, b)
		}
		if b.Cause != "" || b.Reuse {
			t.Fatalf("op %d drew a cause or reuse from nothing: %+v", k, b)
		}
		if a.Cause != "" {
			causes++
		}
		if a.Reuse {
			reuses++
		}
	}
	if causes == 0 || reuses == 0 {
		t.Fatalf("%d causes, %d reuses", causes, reuses)
	}
}

// Two publishes of one (source, id) carry one time attribute, whether the
// first was doomed or not: a reused id published twice is one signal, and
// another time would make the second a conflict (409; seed 2000).
func TestOneKeyOneTime(t *testing.T) {
	w := &workload{setup: Setup{Doomed: 1}}
	a := Op{Source: srcAlt, ID: "s1-3"}
	w.doom(&a, 0)
	b := Op{Source: srcAlt, ID: "s1-3"}
	w.doom(&b, 5)
	if a.Time == "" || a.Expires == 0 || b.Time != a.Time || b.Expires != a.Expires {
		t.Fatalf("first %q %d, second %q %d: want one doomed time", a.Time, a.Expires, b.Time, b.Expires)
	}
	c := Op{Source: srcMain, ID: "s1-9"}
	w.doom(&c, 5)
	d := Op{Source: srcMain, ID: "s1-9"}
	w.doom(&d, 0)
	if c.Time != "" || d.Time != "" || d.Expires != 0 {
		t.Fatalf("a retained key published again: %q, %q", c.Time, d.Time)
	}
}
