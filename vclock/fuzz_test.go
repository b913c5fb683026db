package vclock_test

import (
	"bytes"
	"testing"

	"github.com/signalmesh/signalmesh/vclock"
)

// FuzzUnmarshalBinary: no panic on any input, and whatever is accepted
// encodes back to the same bytes (the form is canonical).
func FuzzUnmarshalBinary(f *testing.F) {
	for _, c := range []vclock.Clock{{}, vclock.New(vclock.Entry{Peer: "a", N: 1}, vclock.Entry{Peer: "bb", N: 300})} {
		b, _ := c.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var c vclock.Clock
		if err := c.UnmarshalBinary(in); err != nil {
			return
		}
		out, _ := c.MarshalBinary()
		if !bytes.Equal(in, out) {
			t.Fatalf("not canonical: in %x out %x", in, out)
		}
		txt, _ := c.MarshalText()
		var c2 vclock.Clock
		if err := c2.UnmarshalText(txt); err != nil || c2.Compare(c) != vclock.Equal {
			t.Fatalf("text round trip: %v %v", c2, err)
		}
	})
}
