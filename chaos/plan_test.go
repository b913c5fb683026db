package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestPlanIsReproducibleAndWellFormed(t *testing.T) {
	seen := map[Kind]bool{}
	for seed := uint64(1); seed <= 40; seed++ {
		p := Plan(seed, 5, 20*time.Second, nil)
		if !reflect.DeepEqual(p, Plan(seed, 5, 20*time.Second, nil)) {
			t.Fatalf("seed %d: two plans differ", seed)
		}
		if len(p) == 0 {
			t.Fatalf("seed %d: no faults", seed)
		}
		var end time.Duration
		for _, f := range p {
			seen[f.Kind] = true
			if f.At < end || f.At+f.For > 19*time.Second || f.Node < 0 || f.Node >= 5 {
				t.Fatalf("seed %d: fault %s overlaps, ends late or names no node", seed, f)
			}
			end = f.At + f.For
			if f.Kind == Halves || f.Kind == Bridge || f.Kind == Flap {
				if len(cutPairs(5, f.Groups)) == 0 {
					t.Fatalf("seed %d: %s cuts nothing", seed, f)
				}
			}
			if f.Kind == Bridge {
				// The bridge reaches everyone; the two sides do not reach each other.
				for _, pr := range cutPairs(5, f.Groups) {
					if pr[0] == f.Node || pr[1] == f.Node {
						t.Fatalf("seed %d: bridge node %d is cut: %s", seed, f.Node, f)
					}
				}
			}
		}
	}
	for _, k := range AllKinds {
		if !seen[k] {
			t.Errorf("40 seeds never drew %s", k)
		}
	}
	if p := Plan(1, 3, 20*time.Second, []Kind{Kill}); p[0].Kind != Kill {
		t.Fatalf("kinds not honoured: %v", p)
	}
}

func TestCutPairs(t *testing.T) {
	got := cutPairs(4, [][]int{{0, 1}, {1, 2, 3}})
	want := [][2]int{{0, 2}, {0, 3}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := cutPairs(3, isolateGroups(3, 1)); !reflect.DeepEqual(got, [][2]int{{0, 1}, {1, 2}}) {
		t.Fatalf("isolate: %v", got)
	}
}
