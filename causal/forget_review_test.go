package causal

import (
	"errors"
	"fmt"
	"testing"
)

// Review of origins: Params.Recall promises to be asked "at most once
// until the origin is forgotten again", and the package doc that "an
// origin never forgotten costs one Recall, when it is first seen". A
// dependency on an origin the core holds nothing of is recalled again by
// every signal that names it and is refused (ErrFull): refused signals do
// not learn their dependencies, so the core never holds the origin and
// asks the caller's store again. A hostile peer flooding a full buffer
// with signals naming up to MaxDeps (48) fresh origins makes the node's
// loop read its store up to 48 times per message (before this branch:
// map lookups only).
func TestOriginsReviewRecallAskedOnceForAnUnknownOrigin(t *testing.T) {
	calls := map[string]int{}
	recall := func(o string) (Floor, bool) { calls[o]++; return Floor{}, false }
	c, err := New[int](Params{Limit: 1, BloomBits: 1 << 12, Recall: recall}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The buffer is full: w:2 waits for w:1.
	if _, err := c.Add(Meta{Origin: "WWWWWWWWWWA", Stamp: Stamp{Seq: 2, Lamport: 2}, ID: "w2"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	phantom := "PPPPPPPPPPA"
	for i := range 100 {
		m := Meta{Origin: origin(i), Stamp: Stamp{Seq: 1, Lamport: 2, Deps: []Ref{{Origin: phantom, Seq: 1}}}, ID: fmt.Sprint("x", i)}
		if _, err := c.Add(m, 0, 0); !errors.Is(err, ErrFull) {
			t.Fatalf("signal %d: %v, want ErrFull", i, err)
		}
	}
	if got := calls[phantom]; got > 1 {
		t.Fatalf("Recall(%s) asked %d times for one origin never forgotten, want at most once", phantom, got)
	}
}

// Review of origins: a node hands every recorded give-up back to a new
// core at start (node/decided.go readDecisions -> Decide), and never
// deletes those records. Decide recalls the forgotten origin into memory
// and keeps decided[r] (deleted only when r is delivered, which it was
// long ago), and decided pins the origin: after any restart, an origin
// that ever had a give-up (DepLost, CauseLost) is back in memory and can
// never be forgotten again.
func TestOriginsReviewDecisionOfADeliveredSignalPinsItsOriginForever(t *testing.T) {
	fl := floors{}
	p := Params{Limit: 64, DepWait: 10, BloomBits: 1 << 12, Recall: fl.recall}
	c, _ := New[int](p, nil)
	g := "GGGGGGGGGGA"
	add := func(c *Core[int], seq uint64) []Release[int] {
		t.Helper()
		out, err := c.Add(Meta{Origin: g, Stamp: Stamp{Seq: seq, Lamport: seq}, ID: fmt.Sprint("g", seq)}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	add(c, 1)
	add(c, 3)
	out := c.Tick(100)
	if len(out) != 1 || out[0].Decision.Zero() {
		t.Fatalf("Tick released %v, want g:3 with a decision", seqsOf(out))
	}
	dec := out[0].Decision // the node saves it (saveDecision) and never deletes it
	if out := add(c, 2); len(out) != 1 || !out[0].Late {
		t.Fatal("g:2 not delivered late")
	}
	if got := forgetAll(c, fl, ""); len(got) != 1 {
		t.Fatalf("forgot %v, want g", got)
	}
	// A restart, as node.restore does it: Restore the reopen state, then
	// readDecisions.
	c2, _ := New[int](p, nil)
	if err := c2.Restore(c.State()); err != nil {
		t.Fatal(err)
	}
	c2.Decide(Ref{Origin: g, Seq: 3}, dec)
	if c2.Origins() != 0 {
		t.Errorf("after a restart the forgotten origin is back in memory (Origins = %d): a decision on a signal delivered long ago recalled it", c2.Origins())
	}
	if fs := c2.Forgettable(map[string]uint64{g: 3}); len(fs) != 1 {
		t.Fatalf("after a restart g cannot be forgotten again (Forgettable = %v): a moot decision on g:3, delivered before the restart, pins it", fs)
	}
}
