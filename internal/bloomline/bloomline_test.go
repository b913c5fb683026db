package bloomline

import (
	"math/bits"
	"strconv"
	"testing"
)

// Every slot of a key lies in one cache line of the filter (in range for
// tiny filters too), and a filter filled to an eighth of its bits answers
// "maybe" for fewer than 0.1 % of keys it never saw (0.02 % unblocked).
func TestSlots(t *testing.T) {
	for _, words := range []int{1, 3, 8, 9, 1 << 12} {
		for i := range 1000 {
			s := Slots(Hash(strconv.Itoa(i)), words)
			for _, x := range s {
				if x.Word < 0 || x.Word >= words || bits.OnesCount64(x.Bit) != 1 {
					t.Fatalf("words %d: slot %+v out of the filter", words, x)
				}
				if words >= 8 && x.Word/8 != s[0].Word/8 {
					t.Fatalf("words %d: slots %+v span two lines", words, s)
				}
			}
		}
	}
	const words = 1 << 14 // 1 Mbit
	f := make([]uint64, words)
	n := words * 64 / 8 / Hashes // keys that set about an eighth of the bits (fewer: collisions)
	for i := range n {
		for _, x := range Slots(Hash("in-"+strconv.Itoa(i)), words) {
			f[x.Word] |= x.Bit
		}
	}
	fp := 0
	const probes = 100_000
	for i := range probes {
		all := true
		for _, x := range Slots(Hash("out-"+strconv.Itoa(i)), words) {
			all = all && f[x.Word]&x.Bit != 0
		}
		if all {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.001 {
		t.Fatalf("false positives %.3f %% at %d keys in %d bits", 100*rate, n, words*64)
	} else {
		t.Logf("false positives %.3f %% at %d keys in %d bits", 100*rate, n, words*64)
	}
}
