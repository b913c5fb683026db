package node

import (
	"bytes"
	"testing"

	"github.com/signalmesh/signalmesh/causal"
)

func TestReopenStateRoundTrip(t *testing.T) {
	st := reopenState{
		core: causal.State{Delivered: map[string]uint64{"AAAAAAAAAAA": 4}, MaxLamport: 9, Bloom: []uint64{0, 3}},
		tops: map[string]uint64{"AAAAAAAAAAA": 7, "BBBBBBBBBBB": 1},
		seen: []uint64{0, 0, 1 << 40, 0},
	}
	b, err := encodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.tops["AAAAAAAAAAA"] != 7 || back.tops["BBBBBBBBBBB"] != 1 || back.seen[2] != 1<<40 || len(back.seen) != 4 ||
		back.core.Delivered["AAAAAAAAAAA"] != 4 || back.core.Bloom[1] != 3 {
		t.Fatalf("round trip lost data: %+v", back)
	}
}

// A bloom's words survive a snapshot and a load into a new filter: ids
// added before are still "maybe", with a hash that does not change from
// one process to the next.
func TestBloomSnapshotLoad(t *testing.T) {
	a := newBloom(1 << 12)
	a.add("order-1")
	b := newBloom(1 << 12)
	if !b.load(a.snapshot()) || !b.mayHave("order-1") {
		t.Fatal("an id added before the snapshot is not in the loaded filter")
	}
	if newBloom(1 << 13).load(a.snapshot()) {
		t.Fatal("a filter of another size loaded")
	}
}

// FuzzDecodeState: a corrupt reopen record fails with an error, never a
// panic or an allocation past what its length allows; what decodes
// encodes to something that decodes to the same encoding.
func FuzzDecodeState(f *testing.F) {
	b, _ := encodeState(reopenState{core: causal.State{Bloom: []uint64{1}}, tops: map[string]uint64{"A": 1}, seen: []uint64{0, 2}})
	f.Add(b)
	f.Add([]byte{stateVersion, 0})
	f.Add([]byte{stateVersion, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := decodeState(in)
		if err != nil {
			return
		}
		out, err := encodeState(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeState(out)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		out2, _ := encodeState(again)
		if !bytes.Equal(out, out2) {
			t.Fatal("encoding is not stable")
		}
	})
}
