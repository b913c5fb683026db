package router_test

import (
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/signalmesh/signalmesh/router"
)

// naiveMatch is the reference: a direct reading of the rules, by recursion.
func naiveMatch(p, t []string) bool {
	if len(p) == 0 {
		return len(t) == 0
	}
	switch p[0] {
	case "**":
		for k := 0; k <= len(t); k++ {
			if naiveMatch(p[1:], t[k:]) {
				return true
			}
		}
		return false
	case "*":
		return len(t) > 0 && naiveMatch(p[1:], t[1:])
	}
	return len(t) > 0 && p[0] == t[0] && naiveMatch(p[1:], t[1:])
}

var alphabet = []string{"a", "b", "c"}

func randPattern(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	segs := make([]string, 0, n)
	for len(segs) < n {
		switch k := r.IntN(6); {
		case k == 0:
			segs = append(segs, "*")
		case k == 1 && (len(segs) == 0 || segs[len(segs)-1] != "**"):
			segs = append(segs, "**")
		default:
			segs = append(segs, alphabet[r.IntN(len(alphabet))])
		}
	}
	return strings.Join(segs, ".")
}

func randType(r *rand.Rand) string {
	n := 1 + r.IntN(5)
	segs := make([]string, n)
	for i := range segs {
		segs[i] = alphabet[r.IntN(len(alphabet))]
	}
	return strings.Join(segs, ".")
}

type refRoute struct {
	pattern  string
	priority int
	id       int
}

// reference evaluates the routing rules by brute force: Matches and the naive
// matcher over every route, then the specified order.
func reference(t *testing.T, routes []refRoute, typ string) []int {
	var out []refRoute
	for _, rt := range routes {
		m := router.Matches(rt.pattern, typ)
		if m != naiveMatch(strings.Split(rt.pattern, "."), strings.Split(typ, ".")) {
			t.Fatalf("Matches(%q, %q) = %v disagrees with the naive reading", rt.pattern, typ, m)
		}
		if m {
			out = append(out, rt)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		si, sj := router.Specificity(out[i].pattern), router.Specificity(out[j].pattern)
		if si != sj {
			return si > sj
		}
		return out[i].priority > out[j].priority
	})
	ids := make([]int, len(out))
	for i, rt := range out {
		ids[i] = rt.id
	}
	return ids
}

// TestMatchAgreesWithReference checks 100,000 random (routes, type) cases,
// including the order of the result, and removals along the way.
func TestMatchAgreesWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const cases = 100000
	var rt *router.Router[int]
	var routes []refRoute
	for c := 0; c < cases; c++ {
		if c%20 == 0 { // a fresh route set every 20 types
			rt = router.New[int]()
			routes = routes[:0]
			for i, n := 0, 1+r.IntN(25); i < n; i++ {
				rr := refRoute{pattern: randPattern(r), priority: r.IntN(5) - 2, id: i}
				if err := rt.Add(rr.pattern, rr.id, router.WithPriority(rr.priority)); err != nil {
					t.Fatal(err)
				}
				routes = append(routes, rr)
			}
		}
		if c%20 == 10 && len(routes) > 0 { // remove every route of one pattern
			p := routes[r.IntN(len(routes))].pattern
			before := len(routes)
			routes = slices.DeleteFunc(routes, func(x refRoute) bool { return x.pattern == p })
			if n := rt.Remove(p); n != before-len(routes) {
				t.Fatalf("Remove(%q) = %d, want %d", p, n, before-len(routes))
			}
		}
		typ := randType(r)
		want := reference(t, routes, typ)
		got := rt.Match(typ)
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("case %d: Match(%q) = %v, want %v; routes %+v", c, typ, got, want, routes)
		}
	}
}
