package router_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/router"
)

func TestSpecificityExamples(t *testing.T) {
	want := []struct {
		p    string
		spec int
	}{
		{"user.123.created", 24000}, {"user.*.created", 17100}, {"user.**.created", 16200},
		{"user.created", 13000}, {"user.*", 9100}, {"user.**", 8200}, {"**", 0},
	}
	r := router.New[string]()
	for i := len(want) - 1; i >= 0; i-- { // add in reverse, so order comes from ranking
		if got := router.Specificity(want[i].p); got != want[i].spec {
			t.Errorf("Specificity(%q) = %d, want %d", want[i].p, got, want[i].spec)
		}
		if err := r.Add(want[i].p, want[i].p); err != nil {
			t.Fatal(err)
		}
	}
	got := r.Match("user.123.created")
	wantOrder := []string{"user.123.created", "user.*.created", "user.**.created", "user.**", "**"}
	if !slices.Equal(got, wantOrder) {
		t.Fatalf("Match = %v, want %v", got, wantOrder)
	}
	if got := r.Match("user.created"); !slices.Equal(got, []string{"user.**.created", "user.created", "user.*", "user.**", "**"}) {
		t.Fatalf("Match(user.created) = %v", got)
	}
}

func TestMatchesRules(t *testing.T) {
	for _, tc := range []struct {
		p, typ string
		want   bool
	}{
		{"user.created", "user.created", true},
		{"user.created", "user.updated", false},
		{"user.*", "user.created", true},
		{"user.*", "user", false},
		{"user.*", "user.a.b", false},
		{"user.**", "user", true},
		{"user.**", "user.a.b.c", true},
		{"**", "a", true},
		{"**.created", "created", true},
		{"**.created", "a.b.created", true},
		{"a.**.b.**.c", "a.b.c", true},
		{"a.**.b.**.c", "a.x.b.y.z.c", true},
		{"a.**.b.**.c", "a.x.y.c", false},
		{"*.*", "a", false},
		{"**.*", "a", true},
		{"**.*", "", false},
		{"a..b", "a..b", false},
		{"user*", "user1", false},
	} {
		if got := router.Matches(tc.p, tc.typ); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.p, tc.typ, got, tc.want)
		}
	}
}

func TestValidateSaysWhichRule(t *testing.T) {
	for _, tc := range []struct {
		p   string
		err error
		seg int
	}{
		{"", router.ErrEmptyPattern, -1},
		{".a", router.ErrEmptySegment, 0},
		{"a.", router.ErrEmptySegment, 1},
		{"a..b", router.ErrEmptySegment, 1},
		{"user*", router.ErrWildcardInSegment, 0},
		{"a.***", router.ErrWildcardInSegment, 1},
		{"a.**.**", router.ErrAdjacentStars, 2},
		{"a.b c", router.ErrBadSegment, 1},
		{"a.é", router.ErrBadSegment, 1},
	} {
		err := router.Validate(tc.p)
		var pe *router.PatternError
		if !errors.Is(err, tc.err) || !errors.As(err, &pe) || pe.Segment != tc.seg {
			t.Errorf("Validate(%q) = %v, want %v at segment %d", tc.p, err, tc.err, tc.seg)
		}
		if err := router.New[int]().Add(tc.p, 1); !errors.Is(err, tc.err) {
			t.Errorf("Add(%q) = %v, want %v", tc.p, err, tc.err)
		}
	}
	for _, ok := range []string{"a", "a.*.b", "**.a.**", "*.**.*", "A-b_c.9"} {
		if err := router.Validate(ok); err != nil {
			t.Errorf("Validate(%q) = %v", ok, err)
		}
	}
	r := router.New[int]()
	for _, p := range []int{-101, 101} {
		if err := r.Add("a", 1, router.WithPriority(p)); !errors.Is(err, router.ErrPriority) {
			t.Errorf("priority %d: %v", p, err)
		}
	}
	if r.Len() != 0 {
		t.Fatalf("rejected routes were added: %d", r.Len())
	}
}

func TestPriorityAndInsertionOrder(t *testing.T) {
	r := router.New[string]()
	must(t, r.Add("a.*", "low", router.WithPriority(-5)))
	must(t, r.Add("a.*", "first"))
	must(t, r.Add("a.*", "high", router.WithPriority(50)))
	must(t, r.Add("a.*", "second"))
	must(t, r.Add("a.b", "literal", router.WithPriority(-100)))
	if got := r.Match("a.b"); !slices.Equal(got, []string{"literal", "high", "first", "second", "low"}) {
		t.Fatalf("Match = %v", got)
	}
}

func TestRemoveExactPatternOnly(t *testing.T) {
	r := router.New[string]()
	for _, p := range []string{"a.*", "a.*", "a.**", "a.b", "**"} {
		must(t, r.Add(p, p))
	}
	if n := r.Remove("a.*"); n != 2 {
		t.Fatalf("Remove(a.*) = %d, want 2", n)
	}
	if n := r.Remove("a.*"); n != 0 {
		t.Fatalf("second Remove = %d", n)
	}
	if n := r.Remove("a.c"); n != 0 {
		t.Fatalf("Remove of an absent pattern = %d", n)
	}
	if got := r.Match("a.b"); !slices.Equal(got, []string{"a.b", "a.**", "**"}) {
		t.Fatalf("after Remove: %v", got)
	}
	for _, p := range []string{"a.**", "a.b", "**"} {
		r.Remove(p)
	}
	if r.Len() != 0 || r.Match("a.b") != nil {
		t.Fatalf("router not empty: %d %v", r.Len(), r.Match("a.b"))
	}
}

func TestRoutePredicates(t *testing.T) {
	r := router.New[string]()
	big := func(s *signalmesh.Signal) bool { return s.Subject == "big" }
	must(t, r.Add("order.*", "any"))
	must(t, r.Add("order.*", "big-only", router.WithMatch(big), router.WithPriority(10)))
	must(t, r.Add("order.created", "exact"))
	big1, _ := signalmesh.New("order.created", "/t", nil, signalmesh.WithSubject("big"))
	small, _ := signalmesh.New("order.created", "/t", nil, signalmesh.WithSubject("small"))
	if got := r.Route(big1); !slices.Equal(got, []string{"exact", "big-only", "any"}) {
		t.Fatalf("Route(big) = %v", got)
	}
	if got := r.Route(small); !slices.Equal(got, []string{"exact", "any"}) {
		t.Fatalf("Route(small) = %v", got)
	}
	if got := r.Match("order.created"); !slices.Equal(got, []string{"exact", "any"}) {
		t.Fatalf("Match skips predicates: %v", got)
	}
}

func TestInvalidTypesMatchNothing(t *testing.T) {
	r := router.New[int]()
	must(t, r.Add("**", 1))
	for _, typ := range []string{"", ".", "a.", ".a", "a..b", "a b", "a.*"} {
		if got := r.Match(typ); got != nil {
			t.Errorf("Match(%q) = %v", typ, got)
		}
	}
	long := strings.Repeat("x.", 40) + "x" // past the 16-segment stack buffer
	if got := r.Match(long); !slices.Equal(got, []int{1}) {
		t.Errorf("long type: %v", got)
	}
}

// Hostile shapes stay polynomial: many ** against a long type.
func TestManyDoubleStarsAreCheap(t *testing.T) {
	r := router.New[int]()
	must(t, r.Add("**.x.**.x.**.x.**.x.**.y", 1))
	typ := strings.Repeat("x.", 500) + "z"
	if got := r.Match(typ); got != nil {
		t.Fatalf("got %v", got)
	}
	if router.Matches("**.x.**.x.**.x.**.x.**.y", typ) {
		t.Fatal("Matches true")
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	r := router.New[int]()
	must(t, r.Add("stable.**", -1))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got := r.Match("stable.a.b")
				if len(got) == 0 || got[len(got)-1] != -1 {
					t.Errorf("reader saw %v", got)
					return
				}
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		p := fmt.Sprintf("stable.%c.*", 'a'+i%3)
		must(t, r.Add(p, i))
		if i%2 == 1 {
			r.Remove(p)
		}
	}
	close(stop)
	wg.Wait()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Many literal siblings move a node's children from a slice to a map and back.
func TestManySiblings(t *testing.T) {
	r := router.New[string]()
	for i := 0; i < 30; i++ {
		p := fmt.Sprintf("svc.s%d.up", i)
		must(t, r.Add(p, p))
	}
	for i := 0; i < 30; i++ {
		typ := fmt.Sprintf("svc.s%d.up", i)
		if got := r.Match(typ); !slices.Equal(got, []string{typ}) {
			t.Fatalf("Match(%s) = %v", typ, got)
		}
	}
	for i := 0; i < 28; i++ {
		if n := r.Remove(fmt.Sprintf("svc.s%d.up", i)); n != 1 {
			t.Fatalf("Remove %d = %d", i, n)
		}
	}
	if got := r.Match("svc.s29.up"); !slices.Equal(got, []string{"svc.s29.up"}) || r.Match("svc.s3.up") != nil {
		t.Fatalf("after removals: %v %v", got, r.Match("svc.s3.up"))
	}
}
