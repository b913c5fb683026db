package vclock_test

import (
	"fmt"
	"testing"

	"github.com/signalmesh/signalmesh/vclock"
)

// clocks returns clocks a and b over n peers with libp2p-sized ids, where b
// differs from a only in its last entry, so Compare must read every entry.
func clocks(n int) (vclock.Clock, vclock.Clock) {
	var a vclock.Clock
	p := ""
	for i := 0; i < n; i++ {
		p = fmt.Sprintf("12D3KooW%044d", i)
		a = a.Set(p, uint64(100+i))
	}
	return a, a.Increment(p)
}

func BenchmarkClock(b *testing.B) {
	for _, n := range []int{8, 64} {
		a, c := clocks(n)
		b.Run(fmt.Sprintf("compare-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if a.Compare(c) != vclock.Before {
					b.Fatal("order")
				}
			}
		})
		b.Run(fmt.Sprintf("merge-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Merge(c)
			}
		})
		b.Run(fmt.Sprintf("increment-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Increment("12D3KooW00000000000000000000000000000000000000000003")
			}
		})
	}
}

// BenchmarkBuffer feeds a causal history of 8 peers to the buffer in reverse
// order within windows of 16 (so most items wait) and reports items per second.
func BenchmarkBuffer(b *testing.B) {
	const peersN, perPeer, window = 8, 512, 16
	type item struct {
		origin string
		clock  vclock.Clock
	}
	var hist []item
	state := vclock.Clock{}
	for i := 0; i < perPeer; i++ {
		for p := 0; p < peersN; p++ {
			id := fmt.Sprintf("peer-%d", p)
			state = state.Increment(id)
			hist = append(hist, item{id, state})
		}
	}
	for i := 0; i+window <= len(hist); i += window {
		w := hist[i : i+window]
		for l, r := 0, len(w)-1; l < r; l, r = l+1, r-1 {
			w[l], w[r] = w[r], w[l]
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		buf, _ := vclock.NewBuffer[int](window, vclock.Clock{})
		released := 0
		for i, it := range hist {
			out, err := buf.Add(it.origin, it.clock, i)
			if err != nil {
				b.Fatal(err)
			}
			released += len(out)
		}
		if released != len(hist) {
			b.Fatalf("released %d of %d", released, len(hist))
		}
		n += len(hist)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "items/s")
}
