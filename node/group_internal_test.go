package node

import (
	"fmt"
	"slices"
	"testing"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/vclock"
)

// A live member judging a signal after members departed passes it over
// when the first of them, in the assignment's order, whose mark covers it
// judged it as its own (it handled it: the live member lags behind it);
// one ranked above that had not judged it yet and is left out, as its
// departure left it out of the others' views. Else the signal is handled
// for the first departed member ranked above the live ones, or is simply
// the live member's own. A late signal is judged without the marks.
func TestGoneOwner(t *testing.T) {
	const me, a, b = "me/g", "a/g", "b/g"
	sigAt := func(id string, seq uint64) *signalmesh.Signal {
		s, err := signalmesh.New("order.created", "/shop", nil, signalmesh.WithID(id))
		if err != nil {
			t.Fatal(err)
		}
		s.Extensions = map[string]any{signalmesh.ExtPeer: "origin",
			signalmesh.ExtCausal: causal.Stamp{Seq: seq, Lamport: seq}.Format()}
		return s
	}
	origin, _ := journal.Place(sigAt("x", 1))
	// A signal whose members, ranked by the assignment, begin with want.
	ranked := func(want ...string) string {
		for i := 0; ; i++ {
			id := fmt.Sprint("sig-", i)
			key := "/shop\x00" + id
			ids := []string{me, a, b}
			slices.SortFunc(ids, func(x, y string) int {
				sx, sy := score(key, x), score(key, y)
				switch {
				case sx > sy:
					return -1
				case sx < sy:
					return 1
				}
				return 0
			})
			if slices.Equal(ids[:len(want)], want) {
				return id
			}
		}
	}
	marks := func(ma, mb uint64) map[string]vclock.Clock {
		var ca, cb vclock.Clock
		return map[string]vclock.Clock{a: ca.Set(origin, ma), b: cb.Set(origin, mb)}
	}
	for _, tc := range []struct {
		name        string
		rank        []string
		ma, mb, seq uint64
		owner       string
		handled     bool
	}{
		{"a ahead handled it", []string{a, me}, 10, 0, 5, "", true},
		{"a had not judged it", []string{a, me}, 4, 0, 5, a, false},
		{"b handled it after a left", []string{a, b, me}, 4, 10, 5, "", true},
		{"a handled it, b behind", []string{a, b, me}, 10, 4, 5, "", true},
		{"neither judged it", []string{a, b, me}, 4, 4, 5, a, false},
		{"b ranks below me", []string{a, me, b}, 4, 10, 5, a, false},
		{"mine", []string{me}, 10, 10, 5, "", false},
	} {
		v := &groupView{
			members: []viewMember{{id: me, peer: "me"}},
			gone:    []viewMember{{id: a, peer: "a"}, {id: b, peer: "b"}},
			marks:   marks(tc.ma, tc.mb),
		}
		s := sigAt(ranked(tc.rank...), tc.seq)
		if o := v.owner(Balanced, s); o != me {
			t.Fatalf("%s: owner %q", tc.name, o)
		}
		owner, handled := v.goneOwner(Balanced, s, false)
		if owner != tc.owner || handled != tc.handled {
			t.Errorf("%s: goneOwner %q, %v; want %q, %v", tc.name, owner, handled, tc.owner, tc.handled)
		}
		// Late, it may lie below a mark that never judged it.
		want := tc.rank[0]
		if want == me {
			want = ""
		}
		if owner, handled := v.goneOwner(Balanced, s, true); owner != want || handled {
			t.Errorf("%s, late: goneOwner %q, %v; want %q, false", tc.name, owner, handled, want)
		}
	}
}
