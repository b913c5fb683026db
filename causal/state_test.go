package causal

import (
	"bytes"
	"errors"
	"testing"
)

// Reopening from a State: what was delivered before is not delivered
// again and need not be read again, and the core answers as the old one
// would have (scenarios in the step language of harness_test.go).
var reopenScenarios = []scenario{
	{name: "reopen/nothing delivered before is pulled or delivered again", steps: []string{
		"add A:1 => A:1",
		"add A:2 => A:2",
		"add B:1 deps=A:2 => B:1",
		"reopen",
		"pull => -",
		"catchup => -",
		"delivered A => 2",
		"delivered B => 1",
		"add A:2 => ErrDuplicate",
		"add A:3 => A:3",
	}},
	{name: "reopen/only what was journaled and not delivered is read", steps: []string{
		"add A:1 => A:1",
		"journal A:2",
		"journal A:3",
		"reopen",
		"pull => A:2",
		"catchup => A:2 A:3",
	}},
	{name: "reopen/the next stamp's frontier and Lamport time are the old core's", steps: []string{
		"add A:1 => A:1",
		"add B:1 deps=A:1 lam=2 => B:1",
		"add C:1 => C:1",
		"frontier D 4 => B:1 C:1 lam=2 trunc=0",
		"reopen",
		"frontier D 4 => B:1 C:1 lam=2 trunc=0",
	}},
	{name: "reopen/a cause delivered before the reopen releases its effect at once (filter and Index)", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 id=order => A:1",
		"reopen",
		"ixcalls => 0",
		"add B:1 cause=order => B:1",
		"ixcalls => 1",
	}},
	{name: "reopen/a retry of an identity delivered before is a duplicate (asked of the Index)", steps: []string{
		"add A:1 id=x dig=7 => A:1",
		"reopen",
		"add B:1 id=x dig=7 => B:1!dup",
		"add B:2 id=x dig=8 => B:2!conflict",
	}},
	{name: "reopen/a range given up before is still delivered late", p: Params{DepWait: 10}, steps: []string{
		"add A:2 => -",
		"tick 10 => A:2!deplost",
		"reopen",
		"add A:1 => A:1!late",
	}},
}

func TestReopenScenarios(t *testing.T) {
	for _, sc := range reopenScenarios {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}

func TestRestoreRefusesAUsedCoreOrAnotherFilter(t *testing.T) {
	c, _ := New[int](Params{Limit: 10, BloomBits: 1 << 12}, nil)
	if _, err := c.Add(Meta{Origin: "A", Stamp: Stamp{Seq: 1, Lamport: 1}, ID: "a"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	st := c.State()
	if err := c.Restore(st); !errors.Is(err, ErrRestore) {
		t.Fatalf("restore into a core that delivered: %v, want ErrRestore", err)
	}
	other, _ := New[int](Params{Limit: 10, BloomBits: 1 << 13}, nil)
	if err := other.Restore(st); !errors.Is(err, ErrRestore) {
		t.Fatalf("restore with a filter of another size: %v, want ErrRestore", err)
	}
}

func TestStateEncodingIsCanonical(t *testing.T) {
	st := State{Delivered: map[string]uint64{"B": 3, "A": 9}, Frontier: map[string]FrontierEntry{"A": {9, 12}, "C": {1, 1}},
		LastLamport: map[string]uint64{"A": 12, "B": 4}, MaxLamport: 12, Skipped: []Gap{{"A", 2, 4}}, Bloom: []uint64{0, 5, 0, 0, 1 << 63}}
	b1, _ := st.MarshalBinary()
	var back State
	if err := back.UnmarshalBinary(b1); err != nil {
		t.Fatal(err)
	}
	b2, _ := back.MarshalBinary()
	if !bytes.Equal(b1, b2) {
		t.Fatalf("round trip changed the encoding:\n%x\n%x", b1, b2)
	}
	if back.Delivered["A"] != 9 || back.Frontier["C"] != (FrontierEntry{1, 1}) || back.Bloom[4] != 1<<63 || len(back.Skipped) != 1 {
		t.Fatalf("round trip lost data: %+v", back)
	}
}

// FuzzStateUnmarshal: any input decodes or fails with an error, never a
// panic or an allocation larger than the input allows; what decodes
// encodes and decodes again to the same bytes.
func FuzzStateUnmarshal(f *testing.F) {
	st := State{Delivered: map[string]uint64{"A": 2}, Frontier: map[string]FrontierEntry{"A": {2, 3}}, MaxLamport: 3,
		Skipped: []Gap{{"A", 1, 1}}, Bloom: []uint64{0, 9}}
	b, _ := st.MarshalBinary()
	f.Add(b)
	f.Add([]byte{stateVersion, 0, 0, 0, 0, 0})
	f.Add([]byte{stateVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		var s State
		if err := s.UnmarshalBinary(in); err != nil {
			return
		}
		out, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again State
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		out2, _ := again.MarshalBinary()
		if !bytes.Equal(out, out2) {
			t.Fatal("encoding is not stable")
		}
	})
}

func TestStateKeepsLost(t *testing.T) {
	st := State{Delivered: map[string]uint64{"H": 2}, Bloom: []uint64{0},
		Lost: map[string]Loss{"H": {From: 2, At: 1 << 62, Dep: true}, "G": {From: 1, At: 7}}}
	b, _ := st.MarshalBinary()
	var back State
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(back.Lost) != 2 || back.Lost["H"] != st.Lost["H"] || back.Lost["G"] != st.Lost["G"] {
		t.Fatalf("round trip lost Lost: %+v", back.Lost)
	}
	st.Lost = nil
	b2, _ := st.MarshalBinary()
	if len(b2) >= len(b) || b2[len(b2)-1] != 0 {
		t.Fatalf("a state without Lost does not encode as before")
	}
}
