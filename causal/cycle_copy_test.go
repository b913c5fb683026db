package causal

import "testing"

// Seed 12809, node 2 (p4I4zU8TLkw = P): s12809-351 (A:2 here; node 1's,
// cause s12809-348) was released CauseLost while its cause (P:2, node 2's
// own) waited behind P:1 (s12809-333), whose cause s12809-332 (source
// /chaos) was D:2, journaled but refused by a full buffer, behind D:1
// (s12809-211, waiting out its CauseWait on an ephemeral's lost cause).
// Another signal with the id s12809-332 but of source /chaos/alt (a reuse,
// A:3 here) waited behind A:2: waitsOn followed it, though it is not
// P:1's cause, and took P:2 for a cycle through A:2.
func TestCauseCycleThroughACopy(t *testing.T) {
	common := []string{
		"add A:1 => A:1",
		"add D:1 cause=a-lost => -",
		"journal D:2 id=c332 => -", // refused: journaled, not waiting
		"know D:2 => -",
		"add P:1 id=c333 cause=c332 csrc=src => -",
		"add P:2 id=c348 => -",
		"add A:2 id=e351 cause=c348 csrc=src => -",
	}
	for _, tc := range []struct{ name, copy, a3 string }{
		{"another source's signal with the cause's id", "add A:3 id=c332 src=alt => -", "A:3"},
		{"a second copy of the cause, the real one journaled", "add A:3 id=c332 => -", "A:3!dup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps := append(append([]string{}, common...), tc.copy,
				"tick 10 => D:1!lost", // A:2's cause is on its way: D:2 is journaled
				"catchup => D:2 P:1 P:2 A:2 "+tc.a3,
			)
			runScenario(t, scenario{p: Params{CauseWait: 10}, steps: steps})
		})
	}
}
