package node

import (
	"testing"

	"github.com/signalmesh/signalmesh/causal"
)

func FuzzParseDecision(f *testing.F) {
	f.Add("abcdefghijk/0000000000000005", []byte{1, 0})
	f.Add("abcdefghijk/0000000000000005", []byte{2, 3})
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		r, d, ok := parseDecision(key, v)
		if !ok {
			return
		}
		if r.Seq == 0 || len(r.Origin) != causal.RefLen || d.GapFrom >= r.Seq {
			t.Fatalf("accepted %q %x as %v %+v", key, v, r, d)
		}
	})
}

func TestParseDecisionRoundTrip(t *testing.T) {
	r, d, ok := parseDecision("abcdefghijk/0000000000000005", []byte{3, 2})
	if !ok || r != (causal.Ref{Origin: "abcdefghijk", Seq: 5}) || d != (causal.Decision{Cause: true, Deps: true, GapFrom: 2}) {
		t.Fatalf("%v %+v %v", r, d, ok)
	}
	for _, bad := range [][2]string{{"abcdefghijk/0000000000000005", "\x01\x05"}, {"short/05", "\x01\x00"}, {"abcdefghijk/zz", "\x01\x00"}, {"abcdefghijk/0000000000000005", "\x01"}} {
		if _, _, ok := parseDecision(bad[0], []byte(bad[1])); ok {
			t.Fatalf("accepted %q %x", bad[0], bad[1])
		}
	}
}
