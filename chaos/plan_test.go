package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestPlanIsReproducibleAndWellFormed(t *testing.T) {
	seen := map[Kind]bool{}
	overlaps := 0
	for seed := uint64(1); seed <= 40; seed++ {
		p := Plan(seed, 5, 20*time.Second, nil, false)
		if !reflect.DeepEqual(p, Plan(seed, 5, 20*time.Second, nil, false)) {
			t.Fatalf("seed %d: two plans differ", seed)
		}
		if len(p) == 0 {
			t.Fatalf("seed %d: no faults", seed)
		}
		busy := map[int]time.Duration{}
		var end time.Duration
		for _, f := range p {
			seen[f.Kind] = true
			if f.Kind == SettleKill {
				if f.At != 20*time.Second {
					t.Fatalf("seed %d: settle kill during the workload: %s", seed, f)
				}
				continue
			}
			if f.At < end {
				overlaps++
			}
			end = max(end, f.At+f.For)
			if f.At+f.For > 19*time.Second || f.Node < 0 || f.Node >= 5 {
				t.Fatalf("seed %d: fault %s ends late or names no node", seed, f)
			}
			if nodeKind(f.Kind) {
				if busy[f.Node] > f.At {
					t.Fatalf("seed %d: two faults on one node overlap, node %d: %s", seed, f.Node, f)
				}
				busy[f.Node] = f.At + f.For
			}
			if f.Kind == Halves || f.Kind == Bridge || f.Kind == Flap || f.Kind == OneWay {
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
	if overlaps == 0 {
		t.Error("no two faults ever overlap")
	}
	if p := Plan(1, 3, 20*time.Second, []Kind{Kill}, false); p[0].Kind != Kill {
		t.Fatalf("kinds not honoured: %v", p)
	}
}

// With cover, the kinds are dealt: a long enough schedule gets each once.
func TestPlanCoverDealsEveryKind(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		got := map[Kind]int{}
		for _, f := range Plan(seed, 3, 40*time.Second, nil, true) {
			got[f.Kind]++
		}
		for _, k := range AllKinds {
			if got[k] != 1 {
				t.Fatalf("seed %d: %s drawn %d times: %v", seed, k, got[k], got)
			}
		}
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
	if got := oneWayPairs([][]int{{0}, {1, 2}}); !reflect.DeepEqual(got, [][2]int{{0, 1}, {0, 2}}) {
		t.Fatalf("one way: %v", got)
	}
	if got := directed([][2]int{{0, 1}}); !reflect.DeepEqual(got, [][2]int{{0, 1}, {1, 0}}) {
		t.Fatalf("directed: %v", got)
	}
}

// The CI run's deal: three 12 s schedules of three nodes get every kind.
func TestDealCoversTheShortRun(t *testing.T) {
	for base := uint64(1); base <= 10; base++ {
		got := map[Kind]int{}
		d := Deal(base, AllKinds, 3)
		for k := 0; k < 3; k++ {
			for _, f := range Plan(base+uint64(k), 3, 12*time.Second, d[k], true) {
				got[f.Kind]++
			}
		}
		for _, k := range AllKinds {
			if got[k] != 1 {
				t.Fatalf("seed %d: %s %d times (%v)", base, k, got[k], got)
			}
		}
	}
}
