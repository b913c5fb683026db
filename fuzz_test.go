package signalmesh_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/signalmesh/signalmesh"
)

// relaxed accepts any valid signal's encoding, so that stability is checked
// even where a re-encoding grows past the default MaxEncoded.
var relaxed = signalmesh.Limits{MaxEncoded: 64 << 20}

// FuzzDecodeJSON: no panic on any input; anything accepted re-encodes to JSON
// that decodes to the same encoding (decode→encode→decode is stable), and its
// binary form round-trips exactly.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range sampleSignals(f) {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"a","data":null,"x":null}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := signalmesh.DecodeJSON(in, signalmesh.Limits{})
		if err != nil {
			return
		}
		enc1, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("accepted signal does not encode: %v", err)
		}
		s2, err := signalmesh.DecodeJSON(enc1, relaxed)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc1, err)
		}
		enc2, err := json.Marshal(s2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("unstable:\n%s\n%s", enc1, enc2)
		}
		checkBinaryRoundTrip(t, s)
	})
}

// FuzzDecodeBinary: no panic on any input; anything accepted encodes back to
// the very same bytes (the wire form is canonical) and survives JSON.
func FuzzDecodeBinary(f *testing.F) {
	for _, s := range sampleSignals(f) {
		b, _ := s.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := signalmesh.DecodeBinary(in, signalmesh.Limits{})
		if err != nil {
			return
		}
		out, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted signal does not encode: %v", err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("not canonical:\n in %x\nout %x", in, out)
		}
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := signalmesh.DecodeJSON(j, relaxed)
		if err != nil {
			t.Fatalf("JSON of accepted signal refused: %v\n%s", err, j)
		}
		j2, _ := json.Marshal(s2)
		if !bytes.Equal(j, j2) {
			t.Fatalf("JSON unstable:\n%s\n%s", j, j2)
		}
	})
}

func checkBinaryRoundTrip(t *testing.T, s *signalmesh.Signal) {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatalf("binary encode: %v", err)
	}
	got, err := signalmesh.DecodeBinary(b, signalmesh.Limits{})
	if err != nil {
		t.Fatalf("binary decode: %v", err)
	}
	if !got.Equal(s) {
		t.Fatalf("binary round trip changed\n got %+v\nwant %+v", got, s)
	}
}
