package chaos

import (
	"context"
	"testing"
	"time"
)

// The shrinker keeps each change that still shows the anomaly: here it
// shows while fault 1 (a kill) is in and the rate is at least 10.
func TestShrinkKeepsTheAnomaly(t *testing.T) {
	spec := Spec{Nodes: 3, Rate: 40, Duration: 20 * time.Second, Parts: DefaultParts(false)}
	faults := []Fault{{Kind: Halves, At: time.Second, For: time.Second}, {Kind: Kill, At: 3 * time.Second, For: time.Second}, {Kind: Pause, At: 5 * time.Second, For: time.Second}}
	failed := Result{Seed: 9, Faults: faults, Verdict: Verdict{Anomalies: []Anomaly{{Kind: "lost"}}}}
	run := func(_ context.Context, s Spec) (Result, error) {
		r := Result{Seed: s.Seed, Faults: s.Faults}
		kill := false
		for _, f := range s.Faults {
			kill = kill || f.Kind == Kill
		}
		if kill && s.Rate >= 10 {
			r.Verdict.Anomalies = []Anomaly{{Kind: "lost"}}
		}
		return r, nil
	}
	best, res, runs := Shrink(context.Background(), spec, failed, "lost", 50, run)
	if len(best.Faults) != 1 || best.Faults[0].Kind != Kill || best.Rate != 10 || best.Parts.Ephemeral != 0 || !best.Parts.None {
		t.Fatalf("shrunk to %+v", best)
	}
	if !hasKind(res.Verdict, "lost") || best.Seed != 9 || best.Schedules != 1 || runs > 50 {
		t.Fatalf("result %+v after %d runs", res, runs)
	}
	if best.Duration != 5*time.Second {
		t.Fatalf("duration %v", best.Duration)
	}
}
