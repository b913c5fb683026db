package vclock_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/signalmesh/signalmesh/vclock"
)

var peers = []string{"a", "b", "c", "d"}

// randClock draws from a few peers and small counters, so that every order
// relation occurs often.
func randClock(r *rand.Rand) vclock.Clock {
	var e []vclock.Entry
	for _, p := range peers {
		if r.IntN(3) > 0 {
			e = append(e, vclock.Entry{Peer: p, N: uint64(r.IntN(3))})
		}
	}
	return vclock.New(e...)
}

// leq is the reference definition: every entry of x is at most y's.
func leq(x, y vclock.Clock) bool {
	for _, e := range x.Entries() {
		if e.N > y.Get(e.Peer) {
			return false
		}
	}
	return true
}

func TestCompareMatchesDefinitionAndIsPartialOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		a, b, c := randClock(r), randClock(r), randClock(r)
		want := vclock.Concurrent
		switch {
		case leq(a, b) && leq(b, a):
			want = vclock.Equal
		case leq(a, b):
			want = vclock.Before
		case leq(b, a):
			want = vclock.After
		}
		if got := a.Compare(b); got != want {
			t.Fatalf("%v.Compare(%v) = %v, want %v", a, b, got, want)
		}
		if a.Compare(a) != vclock.Equal {
			t.Fatalf("not reflexive: %v", a)
		}
		flip := map[vclock.Order]vclock.Order{vclock.Before: vclock.After, vclock.After: vclock.Before,
			vclock.Equal: vclock.Equal, vclock.Concurrent: vclock.Concurrent}
		if b.Compare(a) != flip[a.Compare(b)] {
			t.Fatalf("not antisymmetric: %v vs %v", a, b)
		}
		le := func(x, y vclock.Clock) bool { o := x.Compare(y); return o == vclock.Before || o == vclock.Equal }
		if le(a, b) && le(b, c) && !le(a, c) {
			t.Fatalf("not transitive: %v %v %v", a, b, c)
		}
	}
}

func TestMergeIsASemilattice(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	eq := func(x, y vclock.Clock) bool { return x.Compare(y) == vclock.Equal }
	for i := 0; i < 20000; i++ {
		a, b, c := randClock(r), randClock(r), randClock(r)
		ab := a.Merge(b)
		if !eq(ab, b.Merge(a)) {
			t.Fatalf("not commutative: %v %v", a, b)
		}
		if !eq(ab.Merge(c), a.Merge(b.Merge(c))) {
			t.Fatalf("not associative: %v %v %v", a, b, c)
		}
		if !eq(a.Merge(a), a) {
			t.Fatalf("not idempotent: %v", a)
		}
		if !leq(a, ab) || !leq(b, ab) {
			t.Fatalf("merge %v not above %v and %v", ab, a, b)
		}
		for _, p := range peers { // least upper bound: each entry is one of the inputs'
			if n := ab.Get(p); n != a.Get(p) && n != b.Get(p) {
				t.Fatalf("merge invented %s=%d", p, n)
			}
		}
	}
}

func TestIncrementAndSetDoNotShare(t *testing.T) {
	a := vclock.New(vclock.Entry{Peer: "a", N: 1}, vclock.Entry{Peer: "c", N: 2})
	b := a.Increment("b")
	c := a.Increment("a")
	if a.String() != "{a:1 c:2}" || b.String() != "{a:1 b:1 c:2}" || c.String() != "{a:2 c:2}" {
		t.Fatalf("a %v b %v c %v", a, b, c)
	}
	if a.Set("c", 0).String() != "{a:1}" {
		t.Fatalf("Set 0 did not remove: %v", a.Set("c", 0))
	}
	if b.Compare(a) != vclock.After || a.Compare(b) != vclock.Before || b.Compare(c) != vclock.Concurrent {
		t.Fatal("Increment broke order")
	}
	if (vclock.Clock{}).Compare(a) != vclock.Before || b.Sum() != 4 {
		t.Fatal("zero clock or Sum wrong")
	}
}

func TestEncodings(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 1000; i++ {
		c := randClock(r)
		bin, _ := c.MarshalBinary()
		txt, _ := c.MarshalText()
		js, _ := json.Marshal(c)
		var fromBin, fromTxt, fromJS vclock.Clock
		if err := fromBin.UnmarshalBinary(bin); err != nil {
			t.Fatal(err)
		}
		if err := fromTxt.UnmarshalText(txt); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(js, &fromJS); err != nil {
			t.Fatal(err)
		}
		for _, got := range []vclock.Clock{fromBin, fromTxt, fromJS} {
			if got.Compare(c) != vclock.Equal || got.String() != c.String() {
				t.Fatalf("round trip of %v gave %v", c, got)
			}
		}
	}
	for name, b := range map[string][]byte{
		"empty":        nil,
		"huge count":   {0xff, 0xff, 0x03},
		"zero counter": {1, 1, 'a', 0},
		"out of order": {2, 1, 'b', 1, 1, 'a', 1},
		"repeated":     {2, 1, 'a', 1, 1, 'a', 2},
		"trailing":     {1, 1, 'a', 1, 9},
		"long peer":    {1, 9, 'a', 1},
		"overlong":     {1, 1, 'a', 0x81, 0},
	} {
		var c vclock.Clock
		if err := c.UnmarshalBinary(b); !errors.Is(err, vclock.ErrMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
