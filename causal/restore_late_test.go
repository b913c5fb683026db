package causal_test

import (
	"strconv"
	"testing"

	"github.com/signalmesh/signalmesh/causal"
)

// A signal delivered late (its range given up after DepWait, then it came)
// is not given up again by a core restored from the state saved after it,
// so that a copy replayed later is a duplicate, not a second late delivery.
func TestRestoreKeepsLateDelivery(t *testing.T) {
	o := causal.PeerRef("late-origin")
	p := causal.Params{Limit: 100, DepWait: 10}
	c, err := causal.New[int](p, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := func(seq uint64) causal.Meta {
		return causal.Meta{Origin: o, Stamp: causal.Stamp{Seq: seq, Lamport: seq}, Source: "/s", ID: "id" + strconv.FormatUint(seq, 10), Digest: seq}
	}
	for _, q := range []uint64{1, 2, 3, 6} {
		if _, err := c.Add(m(q), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if out := c.Tick(100); len(out) != 1 || c.Settled(o) != 3 { // gives up 4-5
		t.Fatalf("tick: %d released, settled %d; want 1, 3", len(out), c.Settled(o))
	}
	if out, err := c.Add(m(4), 0, 100); err != nil || len(out) != 1 || !out[0].Late {
		t.Fatalf("4 after it was given up: %+v, %v; want delivered late", out, err)
	}
	b, err := c.State().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var st causal.State
	if err := st.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	r, err := causal.New[int](p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(st); err != nil {
		t.Fatal(err)
	}
	if r.Skipped(causal.Ref{Origin: o, Seq: 4}) || !r.Skipped(causal.Ref{Origin: o, Seq: 5}) || r.Settled(o) != 4 {
		t.Fatalf("restored: skipped(4) %v, skipped(5) %v, settled %d; want false, true, 4",
			r.Skipped(causal.Ref{Origin: o, Seq: 4}), r.Skipped(causal.Ref{Origin: o, Seq: 5}), r.Settled(o))
	}
	if out, err := r.Add(m(4), 0, 200); err != causal.ErrDuplicate || len(out) != 0 {
		t.Fatalf("4 again after the restore: %+v, %v; want ErrDuplicate", out, err)
	}
	if out, err := r.Add(m(5), 0, 200); err != nil || len(out) != 1 || !out[0].Late {
		t.Fatalf("5 after the restore: %+v, %v; want delivered late", out, err)
	}
}
