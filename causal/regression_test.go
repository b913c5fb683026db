package causal

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// A refused signal does not teach the core its dependencies: a hostile
// peer's ErrFull signals, each naming MaxDeps invented origins, must not
// make Pull name them (one journal read each, every Resync) or Missing
// report them. (Signals that wait for a dependency that never comes still
// hold the buffer: bounding a hostile origin's share of it is the trust
// work, not the causal core's.)
func TestRefusedSignalsTeachNoPhantomOrigins(t *testing.T) {
	c, err := New[int](Params{Limit: 4, CauseWait: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := uint64(2); s <= 5; s++ {
		if _, err := c.Add(Meta{Origin: "HHHHHHHHHHA", Stamp: Stamp{Seq: s, Lamport: s}, ID: fmt.Sprint(s)}, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		m := Meta{Origin: "HHHHHHHHHHA", Stamp: Stamp{Seq: uint64(100 + i), Lamport: 1}, ID: fmt.Sprint("x", i)}
		for d := 0; d < MaxDeps; d++ {
			m.Deps = append(m.Deps, Ref{Origin: fmt.Sprintf("F%05d%05d", i, d), Seq: 1 << 60})
		}
		if _, err := c.Add(m, 0, 0); !errors.Is(err, ErrFull) {
			t.Fatalf("want ErrFull, got %v", err)
		}
	}
	if pulls := c.Pull(); len(pulls) != 1 || pulls[0] != (Ref{Origin: "HHHHHHHHHHA", Seq: 1}) {
		t.Fatalf("100 refused signals made Pull name %v (want only the hostile origin's missing first signal)", pulls)
	}
	if gaps, _ := c.Missing(); len(gaps) != 2 {
		t.Fatalf("Missing = %v, want the hostile origin's gaps only", gaps)
	}
}

// CauseWait runs from when the signal began to wait for its cause, not from
// when it was added: a signal that waited long for its origin's previous
// signal is not released without its cause at the first Tick after that
// predecessor arrives.
func TestCauseWaitStartsWithTheWaitForTheCause(t *testing.T) {
	c, _ := New[int](Params{Limit: 10, CauseWait: 100}, nil)
	if _, err := c.Add(Meta{Origin: "BBBBBBBBBBA", Stamp: Stamp{Seq: 2, Lamport: 2}, Cause: "x", ID: "e"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if out, _ := c.Add(Meta{Origin: "BBBBBBBBBBA", Stamp: Stamp{Seq: 1, Lamport: 1}, ID: "b1"}, 0, 500); len(out) != 1 {
		t.Fatalf("want B:1 released, got %d", len(out))
	}
	out := c.Tick(501)
	if len(out) != 0 {
		t.Fatalf("effect waited for its cause 1 unit of CauseWait 100 and was released without it (lost=%v)", out[0].CauseLost)
	}
}

// One delivered stamp with Lamport 2^64-1 must not make the next stamp's
// Lamport wrap to 0 (which ParseStamp refuses: the peer could no longer
// publish): the core bounds a Lamport time by its predecessor's and its
// dependencies'.
func TestHostileLamportIsBounded(t *testing.T) {
	c, _ := New[int](Params{Limit: 10}, nil)
	if _, err := c.Add(Meta{Origin: "HHHHHHHHHHA", Stamp: Stamp{Seq: 1, Lamport: ^uint64(0)}, ID: "bomb"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, lam, _ := c.Frontier("SSSSSSSSSSA", 16)
	next := Stamp{Seq: 1, Lamport: lam + 1}
	if _, err := ParseStamp(next.Format()); err != nil {
		t.Fatalf("a peer that delivered one hostile stamp can no longer publish: its next stamp %q: %v", next.Format(), err)
	}
}

// The ring of recent identities is bounded in bytes, not only in count:
// it keeps copies of the ids and sources it remembers, not the decoded
// signals' text they are substrings of (signalmesh.DecodeBinary shares one
// copy of a signal's text among its strings). Here 2,000 identities whose
// id and source are substrings of 16 KiB strings, each remembered twice
// (the second with another source: the ring's existing key is stored
// again), and the strings dropped: the core's heap grows by a few hundred
// bytes an identity, not 16 KiB.
func TestRecentIdentitiesDoNotKeepTheirSignals(t *testing.T) {
	const n = 2000
	c, err := New[int](Params{Limit: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := func(i, pass int) string {
		return fmt.Sprintf("id-%06d|/src-%d|", i, pass) + strings.Repeat("x", 16<<10)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for pass := range 2 {
		for i := range n {
			s := text(i, pass)
			id, rest, _ := strings.Cut(s, "|")
			src, _, _ := strings.Cut(rest, "|")
			c.Weak(src, id, uint64(i))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	runtime.KeepAlive(c)
	if !c.Weak("/src-1", "id-000007", 7) {
		t.Fatal("the core forgot an identity it remembers")
	}
	if per > 2048 {
		t.Fatalf("the core holds %d bytes per identity remembered: it keeps the text its ids and sources are part of", per)
	}
}
