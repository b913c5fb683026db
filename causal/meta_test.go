package causal

import (
	"errors"
	"strings"
	"testing"
)

func TestPeerRef(t *testing.T) {
	r := PeerRef("12D3KooWExample")
	if len(r) != RefLen || !validRef(r) {
		t.Fatalf("PeerRef = %q: not a valid %d-character ref", r, RefLen)
	}
	if PeerRef("12D3KooWExample") != r || PeerRef("12D3KooWOther") == r {
		t.Fatal("PeerRef is not a function of the peer id")
	}
}

// refA and refB are canonical refs (the last character's low 2 bits are 0).
var (
	refA = PeerRef("peer-a")
	refB = PeerRef("peer-b")
)

func TestStampRoundTrip(t *testing.T) {
	for _, st := range []Stamp{
		{Seq: 1, Lamport: 1},
		{Seq: 7, Lamport: 42, Deps: []Ref{{refA, 3}}},
		{Seq: 18446744073709551615, Lamport: 18446744073709551615, Deps: []Ref{{refA, 1}, {refB, 18446744073709551615}}},
		{Seq: 2, Lamport: 9, Deps: manyDeps(MaxDeps)},
	} {
		s := st.Format()
		got, err := ParseStamp(s)
		if err != nil {
			t.Fatalf("ParseStamp(%q): %v", s, err)
		}
		if got.Format() != s || got.Seq != st.Seq || got.Lamport != st.Lamport || len(got.Deps) != len(st.Deps) {
			t.Fatalf("round trip of %+v: %+v", st, got)
		}
		for i := range st.Deps {
			if got.Deps[i] != st.Deps[i] {
				t.Fatalf("dep %d: %v, want %v", i, got.Deps[i], st.Deps[i])
			}
		}
	}
	// The largest stamp: 20-digit numbers everywhere. (The package doc says
	// "under 1.6 KB"; that holds only while sequence numbers have at most 11
	// digits: 64 deps x (11 + 1 + 20) + 63 commas + 42 is 2,153 bytes.)
	const largest = 20 + 1 + 20 + 1 + MaxDeps*(RefLen+1+20) + MaxDeps - 1
	if n := len(Stamp{Seq: 18446744073709551615, Lamport: 18446744073709551615, Deps: manyDeps(MaxDeps)}.Format()); n != largest {
		t.Errorf("largest stamp is %d bytes, want %d", n, largest)
	}
	if n := len(Stamp{Seq: 99999999999, Lamport: 99999999999, Deps: depsWithSeq(MaxDeps, 99999999999)}.Format()); n > 1600 {
		t.Errorf("largest stamp with 11-digit numbers is %d bytes, over 1.6 KB", n)
	}
}

func manyDeps(n int) []Ref { return depsWithSeq(n, 18446744073709551615) }

func depsWithSeq(n int, seq uint64) []Ref {
	deps := make([]Ref, n)
	for i := range deps {
		deps[i] = Ref{PeerRef(strings.Repeat("p", i+1)), seq}
	}
	return deps
}

func TestParseStampRejects(t *testing.T) {
	tooMany := Stamp{Seq: 1, Lamport: 1, Deps: manyDeps(MaxDeps + 1)}.Format()
	nonCanonRef := refA[:RefLen-1] + "B" // low bits set in the last character
	for _, s := range []string{
		"",
		"1",
		"1/1",
		"0/1/",                    // zero sequence
		"1/0/",                    // zero Lamport
		"01/1/",                   // leading zero
		"1/01/",                   // leading zero
		"+1/1/",                   // sign
		"1/1/" + refA + ":0",      // zero dependency sequence
		"1/1/" + refA + ":01",     // leading zero
		"1/1/" + refA,             // no sequence
		"1/1/" + refA + ":1,",     // trailing comma
		"1/1/," + refA + ":1",     // empty dependency
		"1/1/" + refA[:10] + ":1", // short ref
		"1/1/" + refA + "x:1",     // long ref
		"1/1/" + strings.Repeat("=", RefLen) + ":1", // not base64url
		"1/1/" + nonCanonRef + ":1",                 // non-canonical base64
		"18446744073709551616/1/",                   // overflow
		"1/1/" + refA + ":18446744073709551616",     // overflow
		"123456789012345678901/1/",                  // too long
		" 1/1/",                                     // space
		"1/1/ " + refA + ":1",
		"1/1/" + refA + ":1/",
		tooMany,
	} {
		if st, err := ParseStamp(s); !errors.Is(err, ErrMeta) {
			t.Errorf("ParseStamp(%q) = %+v, %v; want ErrMeta", clip(s), st, err)
		}
	}
}

func FuzzParseStamp(f *testing.F) {
	for _, s := range []string{
		"1/1/",
		"7/42/" + refA + ":3",
		"2/9/" + refA + ":1," + refB + ":18446744073709551615",
		"01/1/",
		"1/1/" + refA + ":0",
		Stamp{Seq: 1, Lamport: 1, Deps: manyDeps(MaxDeps)}.Format(),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseStamp(s)
		if err != nil {
			if !errors.Is(err, ErrMeta) {
				t.Fatalf("ParseStamp(%q): error %v is not ErrMeta", s, err)
			}
			return
		}
		if got := st.Format(); got != s {
			t.Fatalf("ParseStamp(%q).Format() = %q", s, got)
		}
		if st.Seq == 0 || st.Lamport == 0 || len(st.Deps) > MaxDeps {
			t.Fatalf("ParseStamp(%q) = %+v breaks a bound", s, st)
		}
		for _, d := range st.Deps {
			if d.Seq == 0 || !validRef(d.Origin) {
				t.Fatalf("ParseStamp(%q): bad dependency %v", s, d)
			}
		}
	})
}
