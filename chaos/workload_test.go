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
