package vclock_test

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/signalmesh/signalmesh/vclock"
)

type event struct {
	id     int
	origin string
	clock  vclock.Clock
}

// history makes a random causal history: each step a peer may first receive
// (merge the clock of) an earlier event, then publishes.
func history(r *rand.Rand, n int) []event {
	state := map[string]vclock.Clock{}
	var h []event
	for i := 0; i < n; i++ {
		p := peers[r.IntN(len(peers))]
		if len(h) > 0 && r.IntN(2) == 0 {
			state[p] = state[p].Merge(h[r.IntN(len(h))].clock)
		}
		state[p] = state[p].Increment(p)
		h = append(h, event{id: i, origin: p, clock: state[p]})
	}
	return h
}

// Any permutation of a causal history, with every event offered twice, is
// released exactly once per event and in an order consistent with causality.
func TestBufferReleasesAnyPermutationCausally(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 2000; trial++ {
		h := history(r, 1+r.IntN(60))
		offers := append(append([]event{}, h...), h...)
		r.Shuffle(len(offers), func(i, j int) { offers[i], offers[j] = offers[j], offers[i] })
		b, err := vclock.NewBuffer[int](len(h), vclock.Clock{})
		if err != nil {
			t.Fatal(err)
		}
		var released []int
		dups := 0
		for _, e := range offers {
			out, err := b.Add(e.origin, e.clock, e.id)
			if errors.Is(err, vclock.ErrDuplicate) {
				dups++
				continue
			}
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			released = append(released, out...)
		}
		if len(released) != len(h) || dups != len(h) || b.Len() != 0 {
			t.Fatalf("trial %d: released %d of %d, %d duplicates refused, %d waiting", trial, len(released), len(h), dups, b.Len())
		}
		pos := make(map[int]int)
		for i, id := range released {
			if _, seen := pos[id]; seen {
				t.Fatalf("event %d released twice", id)
			}
			pos[id] = i
		}
		for _, x := range h {
			for _, y := range h {
				if x.clock.Compare(y.clock) == vclock.Before && pos[x.id] > pos[y.id] {
					t.Fatalf("effect %d (%v) released before its cause %d (%v)", y.id, y.clock, x.id, x.clock)
				}
			}
		}
		if len(b.Missing()) != 0 {
			t.Fatalf("missing reported with nothing waiting: %v", b.Missing())
		}
	}
}

func TestBufferBoundAndMissing(t *testing.T) {
	b, _ := vclock.NewBuffer[string](2, vclock.New(vclock.Entry{Peer: "a", N: 1}))
	c := func(e ...vclock.Entry) vclock.Clock { return vclock.New(e...) }
	if out, err := b.Add("a", c(vclock.Entry{Peer: "a", N: 1}), "old"); !errors.Is(err, vclock.ErrDuplicate) || out != nil {
		t.Fatalf("already delivered: %v %v", out, err)
	}
	if _, err := b.Add("x", c(vclock.Entry{Peer: "a", N: 1}), "?"); !errors.Is(err, vclock.ErrNoOrigin) {
		t.Fatalf("no origin entry: %v", err)
	}
	mustHold := func(origin string, clk vclock.Clock, v string) {
		t.Helper()
		if out, err := b.Add(origin, clk, v); err != nil || out != nil {
			t.Fatalf("Add(%s %v) = %v, %v; want held", origin, clk, out, err)
		}
	}
	mustHold("a", c(vclock.Entry{Peer: "a", N: 4}), "a4")
	mustHold("b", c(vclock.Entry{Peer: "a", N: 6}, vclock.Entry{Peer: "b", N: 1}), "b1")
	want := []vclock.Gap{{Origin: "a", From: 2, To: 3}, {Origin: "a", From: 5, To: 6}}
	if got := b.Missing(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Missing() = %v, want %v", got, want)
	}
	if _, err := b.Add("a", c(vclock.Entry{Peer: "a", N: 9}), "a9"); !errors.Is(err, vclock.ErrFull) {
		t.Fatalf("third waiting item: %v, want ErrFull", err)
	}
	if b.Len() != 2 {
		t.Fatalf("Len = %d", b.Len())
	}
	var got []string
	for n := uint64(2); n <= 6; n++ {
		if n == 4 {
			continue
		}
		out, err := b.Add("a", c(vclock.Entry{Peer: "a", N: n}), "a"+string(rune('0'+n)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
	}
	if !reflect.DeepEqual(got, []string{"a2", "a3", "a4", "a5", "a6", "b1"}) || b.Len() != 0 {
		t.Fatalf("released %v", got)
	}
	if d := b.Delivered().String(); d != "{a:6 b:1}" {
		t.Fatalf("Delivered = %s", d)
	}
	if _, err := vclock.NewBuffer[int](0, vclock.Clock{}); err == nil {
		t.Fatal("limit 0 accepted")
	}
}
