package node

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/signalmesh/signalmesh"
)

func sampleSigs(t testing.TB, n, size int) []*signalmesh.Signal {
	sigs := make([]*signalmesh.Signal, n)
	for i := range sigs {
		s, err := signalmesh.New("frame.test", "/t", bytes.Repeat([]byte{'x'}, size), signalmesh.WithSubject(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		sigs[i] = s
	}
	return sigs
}

func TestFramesRoundTrip(t *testing.T) {
	for _, tc := range []struct{ n, size int }{{1, 10}, {2, 10}, {500, 100}, {40, 100 << 10}} {
		sigs := sampleSigs(t, tc.n, tc.size)
		frames, err := encodeFrames(sigs)
		if err != nil {
			t.Fatal(err)
		}
		var got []*signalmesh.Signal
		for _, f := range frames {
			if len(f) > maxFrame && f[0] == frameMagic {
				t.Fatalf("frame of %d bytes", len(f))
			}
			ss, err := decodeFrame(f, signalmesh.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ss...)
		}
		if len(got) != len(sigs) {
			t.Fatalf("%d signals in, %d out", len(sigs), len(got))
		}
		for i := range got {
			if !got[i].Equal(sigs[i]) {
				t.Fatalf("signal %d changed", i)
			}
		}
	}
	for _, bad := range [][]byte{nil, {frameMagic}, {frameMagic, 1}, {frameMagic, 2, 200}, {frameMagic, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := decodeFrame(bad, signalmesh.Limits{}); err == nil {
			t.Errorf("decodeFrame(%x) accepted", bad)
		}
	}
}

// FuzzDecodeFrame: no panic on any gossip payload, and whatever is accepted
// re-encodes to frames that decode to the same signals.
func FuzzDecodeFrame(f *testing.F) {
	for _, n := range []int{1, 3} {
		frames, _ := encodeFrames(sampleSigs(f, n, 8))
		f.Add(frames[0])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sigs, err := decodeFrame(b, signalmesh.Limits{})
		if err != nil {
			return
		}
		frames, err := encodeFrames(sigs)
		if err != nil {
			t.Fatal(err)
		}
		var again []*signalmesh.Signal
		for _, fr := range frames {
			ss, err := decodeFrame(fr, signalmesh.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, ss...)
		}
		if len(again) != len(sigs) {
			t.Fatalf("%d then %d", len(sigs), len(again))
		}
		for i := range sigs {
			if !sigs[i].Equal(again[i]) {
				t.Fatal("changed")
			}
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(encodeAck(ackAck, []place{{Origin: "AAAAAAAAAAA", Seq: 1}, {Origin: "BBBBBBBBBBA", Seq: 1 << 40}}))
	f.Add(encodeAck(ackAsk, []place{{Origin: "AAAAAAAAAAA", Seq: 7}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeAck(b)
		if err != nil {
			return
		}
		if len(m.places) == 0 || len(m.places) > maxAckPlaces {
			t.Fatalf("decoded %d places", len(m.places))
		}
		if !bytes.Equal(encodeAck(m.kind, m.places), b) {
			t.Fatalf("ack not canonical: %x", b)
		}
	})
}

func TestBloomHasNoFalseNegatives(t *testing.T) {
	b := newBloom(1 << 16)
	for i := 0; i < 5000; i++ {
		b.add(fmt.Sprint("id-", i))
	}
	fp := 0
	for i := 0; i < 5000; i++ {
		if !b.mayHave(fmt.Sprint("id-", i)) {
			t.Fatalf("false negative for id-%d", i)
		}
		if b.mayHave(fmt.Sprint("other-", i)) {
			fp++
		}
	}
	if fp > 250 { // 5,000 in 65,536 bits with 4 hashes: about 2.4 % expected
		t.Fatalf("%d false positives in 5,000", fp)
	}
}
