package causal

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
)

// floors is a store of forgotten origins' floors, as a caller keeps them
// (a node: one record each in its datastore).
type floors map[string]Floor

func (f floors) recall(o string) (Floor, bool) { x, ok := f[o]; return x, ok }

// forgetAll forgets every forgettable origin but keep, storing the floors
// first, as a caller must.
func forgetAll[T any](c *Core[T], fl floors, keep string) []Floor {
	want := c.Delivered()
	delete(want, keep)
	fs := c.Forgettable(want)
	for _, f := range fs {
		fl[f.Origin] = f
	}
	return c.Forget(fs)
}

func origin(i int) string { return fmt.Sprintf("O%010d", i) }

func seqsOf(rel []Release[int]) []uint64 {
	var out []uint64
	for _, r := range rel {
		out = append(out, r.Meta.Seq)
	}
	return out
}

// After 2,000 origins published and left, the core's per-origin state
// holds the live origin only; a forgotten origin's old signals are
// duplicates, its new ones are delivered in its order (the later one
// first waits for the earlier), a signal naming one of its signals is
// ready, and a State taken after it (a reopen) forgets them too.
func TestForgetDepartedOrigins(t *testing.T) {
	const n = 2000
	fl := floors{}
	c, err := New[int](Params{Limit: 64, CauseWait: 100, DepWait: 100, BloomBits: 1 << 12, Recall: fl.recall}, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := "LIVELIVELIA"
	lam := uint64(0)
	for i := range n {
		for s := uint64(1); s <= 3; s++ {
			lam++
			if out, err := c.Add(Meta{Origin: origin(i), Stamp: Stamp{Seq: s, Lamport: lam}, ID: fmt.Sprint(i, "/", s)}, 0, 0); err != nil || len(out) != 1 {
				t.Fatalf("origin %d seq %d: %v, %d released", i, s, err, len(out))
			}
		}
	}
	if out, err := c.Add(Meta{Origin: live, Stamp: Stamp{Seq: 1, Lamport: lam + 1}, ID: "live1"}, 0, 0); err != nil || len(out) != 1 {
		t.Fatal(err)
	}
	if got := c.Origins(); got != n+1 {
		t.Fatalf("Origins = %d before forgetting, want %d", got, n+1)
	}
	if got := len(forgetAll(c, fl, live)); got != n {
		t.Fatalf("forgot %d origins, want %d", got, n)
	}
	if got := c.Origins(); got != 1 {
		t.Fatalf("Origins = %d after forgetting %d departed ones, want 1 (the live one)", got, n)
	}
	if st := c.State(); len(st.Delivered) != 1 || len(st.Frontier)+len(st.LastLamport) > 2 {
		t.Fatalf("the State still names forgotten origins: %d delivered, %d frontier, %d Lamport", len(st.Delivered), len(st.Frontier), len(st.LastLamport))
	}
	// A late copy of an old signal: a duplicate.
	if _, err := c.Add(Meta{Origin: origin(7), Stamp: Stamp{Seq: 2, Lamport: 99}, ID: "7/2"}, 0, 1); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("an old signal of a forgotten origin: %v, want ErrDuplicate", err)
	}
	// It returns: 5 before 4 waits for 4.
	if out, err := c.Add(Meta{Origin: origin(8), Stamp: Stamp{Seq: 5, Lamport: lam + 3}, ID: "8/5"}, 0, 1); err != nil || len(out) != 0 {
		t.Fatalf("seq 5 of a returning origin before its seq 4: %v, released %v", err, seqsOf(out))
	}
	out, err := c.Add(Meta{Origin: origin(8), Stamp: Stamp{Seq: 4, Lamport: lam + 2}, ID: "8/4"}, 0, 1)
	if err != nil || fmt.Sprint(seqsOf(out)) != "[4 5]" {
		t.Fatalf("seq 4 of a returning origin: %v, released %v, want [4 5]", err, seqsOf(out))
	}
	// A signal naming a forgotten origin's last signal is ready.
	out, err = c.Add(Meta{Origin: live, Stamp: Stamp{Seq: 2, Lamport: lam + 4, Deps: []Ref{{Origin: origin(9), Seq: 3}}}, ID: "live2"}, 0, 1)
	if err != nil || len(out) != 1 {
		t.Fatalf("a signal naming a forgotten origin's signal: %v, released %d", err, len(out))
	}
	if _, recalled := c.Forgotten(); recalled != 3 {
		t.Fatalf("recalled %d origins, want 3", recalled)
	}
	// Reopen from the State: the forgotten origins are still recalled.
	c2, _ := New[int](Params{Limit: 64, BloomBits: 1 << 12, Recall: fl.recall}, nil)
	if err := c2.Restore(c.State()); err != nil {
		t.Fatal(err)
	}
	c2.Know(Ref{Origin: origin(12), Seq: 3}) // a journal listing at the start names it: nothing to read
	if p := c2.Pull(); len(p) != 0 {
		t.Fatalf("Pull names %v for a forgotten origin the journal lists up to its floor", p)
	}
	if _, err := c2.Add(Meta{Origin: origin(11), Stamp: Stamp{Seq: 1, Lamport: 1}, ID: "11/1"}, 0, 2); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("after a restore, an old signal of a forgotten origin: %v, want ErrDuplicate", err)
	}
	if out, err := c2.Add(Meta{Origin: origin(11), Stamp: Stamp{Seq: 4, Lamport: lam + 9}, ID: "11/4"}, 0, 2); err != nil || len(out) != 1 {
		t.Fatalf("after a restore, the next signal of a forgotten origin: %v, released %d", err, len(out))
	}
}

// An origin is not forgotten while a signal of it waits or a waiting
// signal names it, while a range of it is given up (deliverable late), nor
// when it delivered more since the caller chose it.
func TestForgetKeepsPinnedOrigins(t *testing.T) {
	a, b, w, g := "AAAAAAAAAAA", "BBBBBBBBBBA", "WWWWWWWWWWA", "GGGGGGGGGGA"
	add := func(c *Core[int], o string, seq uint64, deps ...Ref) []Release[int] {
		t.Helper()
		out, err := c.Add(Meta{Origin: o, Stamp: Stamp{Seq: seq, Lamport: seq, Deps: deps}, ID: fmt.Sprint(o, seq)}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	fl := floors{}
	c, _ := New[int](Params{Limit: 64, BloomBits: 1 << 12, Recall: fl.recall}, nil)
	add(c, a, 1)
	add(c, b, 1)
	add(c, w, 2, Ref{Origin: a, Seq: 1}) // waits for w:1, names a:1
	add(c, b, 3)                         // waits for b:2
	if fs := c.Forgettable(map[string]uint64{a: 1, b: 1}); len(fs) != 0 {
		t.Fatalf("forgettable %v: a is named by a waiting signal, b has one waiting", fs)
	}
	add(c, b, 2)
	if fs := c.Forgettable(map[string]uint64{b: 1}); len(fs) != 0 {
		t.Fatalf("forgettable %v: b delivered 3 since it was chosen at 1", fs)
	}
	fs := c.Forgettable(map[string]uint64{b: 3})
	if len(fs) != 1 {
		t.Fatalf("forgettable %v, want b:3", fs)
	}
	add(c, b, 4)
	if got := c.Forget(fs); len(got) != 0 {
		t.Fatalf("forgot %v, delivered since Forgettable", got)
	}

	d, _ := New[int](Params{Limit: 64, DepWait: 10, BloomBits: 1 << 12, Recall: fl.recall}, nil)
	add(d, g, 1)
	add(d, g, 3)
	if out := d.Tick(100); len(out) != 1 || !out[0].DepLost {
		t.Fatalf("Tick released %v, want g:3 without g:2", seqsOf(out))
	}
	if fs := d.Forgettable(map[string]uint64{g: 3}); len(fs) != 0 {
		t.Fatalf("forgettable %v: g:2 is given up and deliverable late", fs)
	}
	if out := add(d, g, 2); len(out) != 1 || !out[0].Late {
		t.Fatal("g:2 not delivered late")
	}
	if fs := d.Forgettable(map[string]uint64{g: 3}); len(fs) != 1 {
		t.Fatalf("forgettable %v, want g:3 once its hole is filled", fs)
	}
	h, x := "HHHHHHHHHHA", "XXXXXXXXXXA"
	add(d, h, 1, Ref{Origin: x, Seq: 1}) // x:1 never comes
	if out := d.Tick(200); len(out) != 1 || !out[0].DepLost {
		t.Fatalf("Tick released %v, want h:1 without x:1", seqsOf(out))
	}
	d.Tick(210)
	if fs := d.Forgettable(map[string]uint64{h: 1}); len(fs) != 0 {
		t.Fatalf("forgettable %v: h lost a dependency within 2×DepWait (Frontier leaves it out)", fs)
	}
	d.Tick(300)
	if fs := d.Forgettable(map[string]uint64{h: 1}); len(fs) != 1 {
		t.Fatalf("forgettable %v, want h:1 once its loss is past", fs)
	}
}

// memPerOrigin measures the heap a core holds per origin that delivered
// three signals, before and after they are forgotten.
func memPerOrigin(t testing.TB, n int) (before, after float64) {
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	disk := &struct{ fl floors }{floors{}}
	recall := func(o string) (Floor, bool) { return disk.fl.recall(o) }
	c, err := New[int](Params{Limit: 64, BloomBits: 1 << 12, Recent: 64, Recall: recall}, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := heap()
	lam := uint64(0)
	for i := range n {
		for s := uint64(1); s <= 3; s++ {
			lam++
			if _, err := c.Add(Meta{Origin: origin(i), Stamp: Stamp{Seq: s, Lamport: lam}, ID: fmt.Sprint(i, "/", s)}, 0, int64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := heap()
	forgetAll(c, disk.fl, "")
	disk.fl = nil // the floors live in the caller's store, not in the core's memory
	empty := heap()
	runtime.KeepAlive(c)
	return float64(int64(full-base)) / float64(n), float64(int64(empty-base)) / float64(n)
}

// The memory of departed origins is given back: a few bytes per origin
// at most after they are forgotten (Go maps keep their room: shrink).
func TestForgetFreesMemory(t *testing.T) {
	before, after := memPerOrigin(t, 20000)
	t.Logf("heap per departed origin: %.0f bytes held, %.1f after Forget", before, after)
	if before < 100 || after > before/10 {
		t.Fatalf("heap per departed origin: %.0f bytes held, %.1f after Forget: want most of it freed", before, after)
	}
}

// An origin Recall once had no floor for (remembered, not asked again)
// that is then seen, delivered and forgotten is recalled when met again:
// Forget drops what was remembered of it.
func TestForgetAfterNoFloorRecallsAgain(t *testing.T) {
	fl := floors{}
	asked := 0
	recall := func(o string) (Floor, bool) { asked++; return fl.recall(o) }
	c, err := New[int](Params{Limit: 1, BloomBits: 1 << 12, Recall: recall}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := "XXXXXXXXXXA"
	if _, err := c.Add(Meta{Origin: "WWWWWWWWWWA", Stamp: Stamp{Seq: 2, Lamport: 2}, ID: "w2"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // refused, naming x: one Recall
		m := Meta{Origin: origin(i), Stamp: Stamp{Seq: 1, Lamport: 3, Deps: []Ref{{Origin: x, Seq: 1}}}, ID: fmt.Sprint("r", i)}
		if _, err := c.Add(m, 0, 0); !errors.Is(err, ErrFull) {
			t.Fatalf("signal %d: %v, want ErrFull", i, err)
		}
	}
	if asked != 1+3+1 { // w, each refused signal's own origin, and x once
		t.Fatalf("Recall asked %d times, want 5", asked)
	}
	x1 := Meta{Origin: x, Stamp: Stamp{Seq: 1, Lamport: 1}, ID: "x1"}
	if out, err := c.Add(x1, 0, 0); err != nil || len(out) != 1 {
		t.Fatalf("x:1: %v, %d released", err, len(out))
	}
	if got := forgetAll(c, fl, "WWWWWWWWWWA"); len(got) != 1 || got[0].Origin != x {
		t.Fatalf("forgot %v, want x", got)
	}
	if _, err := c.Add(x1, 0, 0); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("x:1 again after x was forgotten: %v, want ErrDuplicate (its floor recalled)", err)
	}
}

// A recorded decision about a signal at or below what was delivered (or
// below a forgotten origin's floor) is not kept: Decide says so, and the
// caller deletes its record.
func TestDecideMoot(t *testing.T) {
	fl := floors{"FFFFFFFFFFA": {Origin: "FFFFFFFFFFA", Seq: 5, Lamport: 5}}
	c, _ := New[int](Params{Limit: 8, BloomBits: 1 << 12, Recall: fl.recall}, nil)
	h := "HHHHHHHHHHA"
	if out, err := c.Add(Meta{Origin: h, Stamp: Stamp{Seq: 1, Lamport: 1}, ID: "h1"}, 0, 0); err != nil || len(out) != 1 {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    Ref
		kept bool
	}{
		{Ref{Origin: h, Seq: 1}, false},
		{Ref{Origin: h, Seq: 3}, true},
		{Ref{Origin: "FFFFFFFFFFA", Seq: 5}, false},
		{Ref{Origin: "FFFFFFFFFFA", Seq: 7}, true},
	} {
		if got := c.Decide(tc.r, Decision{GapFrom: 1}); got != tc.kept {
			t.Errorf("Decide(%v) kept %v, want %v", tc.r, got, tc.kept)
		}
	}
}
