package bridge_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/vclock"
)

func stock(subject string, qty int, at time.Time, clock vclock.Clock) *signalmesh.Signal {
	s, _ := signalmesh.New("inventory.set", "/test", map[string]int{"qty": qty}, signalmesh.WithSubject(subject), signalmesh.WithTime(at))
	text, _ := clock.MarshalText()
	_ = s.SetExtension(bridge.ClockExtension, string(text))
	return s
}

func qty(t *testing.T, s *signalmesh.Signal) int {
	var v struct{ Qty int }
	if err := s.DecodeData(&v); err != nil {
		t.Fatal(err)
	}
	return v.Qty
}

// Every resolver gives one state whatever order the signals arrive in.
func TestResolversAreOrderIndependent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var c vclock.Clock
	eu1 := c.Set("eu", 1)
	us1 := c.Set("us", 1)              // concurrent with eu1
	eu2 := eu1.Merge(us1).Set("eu", 2) // after both
	sigs := []*signalmesh.Signal{
		stock("book", 5, t0, eu1),
		stock("book", 7, t0.Add(time.Second), us1),
		stock("book", 3, t0.Add(-time.Hour), eu2), // its wall clock is behind: LWW and vector clocks disagree
		stock("pen", 1, t0, eu1),
	}
	sum := bridge.VectorDominance{Merge: func(a, b *signalmesh.Signal) (*signalmesh.Signal, error) {
		var x, y struct{ Qty int }
		_ = a.DecodeData(&x)
		_ = b.DecodeData(&y)
		m := stock(a.Subject, x.Qty+y.Qty, a.Time, vclock.Clock{})
		return m, nil
	}}
	for _, c := range []struct {
		name string
		r    bridge.Resolver
		want int
	}{
		{"last writer wins", bridge.LastWriterWins{}, 7},
		{"vector dominance", bridge.VectorDominance{}, 3},
		{"custom", bridge.ResolverFunc(func(cur, in *signalmesh.Signal) (*signalmesh.Signal, error) {
			if cur == nil || qty(t, in) > qty(t, cur) {
				return in, nil
			}
			return cur, nil
		}), 7},
	} {
		for seed := range uint64(20) {
			order := append([]*signalmesh.Signal(nil), sigs...)
			rand.New(rand.NewPCG(seed, 1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			view := bridge.NewLatest(c.r)
			for _, s := range order {
				if err := view.Apply(s); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := view.Get("book")
			if !ok || qty(t, got) != c.want || view.Len() != 2 {
				t.Fatalf("%s, order %d: book %v, want qty %d", c.name, seed, got, c.want)
			}
		}
	}
	// Concurrent updates go to Merge, called in one order whatever the arrival order.
	a, b := stock("lamp", 2, t0, eu1), stock("lamp", 4, t0, us1)
	for _, pair := range [][2]*signalmesh.Signal{{a, b}, {b, a}} {
		view := bridge.NewLatest(sum)
		_ = view.Apply(pair[0])
		_ = view.Apply(pair[1])
		if got, _ := view.Get("lamp"); qty(t, got) != 6 {
			t.Fatalf("merged qty %d, want 6", qty(t, got))
		}
	}
}
