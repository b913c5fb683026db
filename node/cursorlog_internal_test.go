package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/signalmesh/signalmesh/vclock"
)

// A cursor log written by an older version (advances with and without an
// identity hash) reads as before, and hand-over lines without a later
// advance of their event come back in the order they were written; a
// hand-over line torn anywhere is ignored, and cut.
func TestCursorLogReadsHandOvers(t *testing.T) {
	log := "AAAAAAAAAAA 3\n" + // before the identity set
		"AAAAAAAAAAA 4 00000000000000a4\n" +
		"> AAAAAAAAAAA 5 00000000000000a5\n" +
		"AAAAAAAAAAA 5 00000000000000a5\n" + // handed over, then handled
		"> BBBBBBBBBBB 7 00000000000000b7\n" + // cut short: no advance
		"> - 0 00000000000000ee\n" + // a Weak signal handed over
		"> AAAAAAAAAAA 6 00000000000000a6\n" // the crash came in its handler
	for _, torn := range []string{"", ">", "> 9", "> AAAAAAAAAAA 7", "> AAAAAAAAAAA 7 0000000"} {
		t.Run(fmt.Sprintf("torn %q", torn), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "cursors", "m-s.log")
			if err := os.WriteFile(path, []byte(log+torn), 0o644); err != nil {
				t.Fatal(err)
			}
			l, c, ids, open, err := openCursorLog(dir, "m", "s")
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			if want := vclock.New().Set("AAAAAAAAAAA", 5); c.Compare(want) != vclock.Equal {
				t.Errorf("cursor %v, want %v", c, want)
			}
			if want := []uint64{0xa4, 0xa5}; !slices.Equal(ids, want) {
				t.Errorf("handled ids %x, want %x", ids, want)
			}
			want := []handover{{"BBBBBBBBBBB", 7, 0xb7}, {"-", 0, 0xee}, {"AAAAAAAAAAA", 6, 0xa6}}
			if !slices.Equal(open, want) {
				t.Errorf("handed over, not handled: %v, want %v", open, want)
			}
			if b, err := os.ReadFile(path); err != nil || string(b) != log {
				t.Errorf("the torn line is not cut: %q, %v", b, err)
			}
		})
	}
}

// What a kill -9 leaves of a cursor log at each step of a hand-over: the
// signal handed over is owed until an advance of it was written, which
// goes with the next hand-over line or when the subscription flushes (it
// waits). What is owed stays in the log across a checkpoint.
func TestCursorLogHandOverSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	a, b := handover{"AAAAAAAAAAA", 1, 0xa1}, handover{"BBBBBBBBBBB", 1, 0xb1}
	// kill reads the log as a restart after a kill -9 would: what the
	// last process wrote, not what it held back.
	kill := func() ([]handover, uint64) {
		t.Helper()
		l, c, _, open, err := openCursorLog(dir, "m", "s")
		if err != nil {
			t.Fatal(err)
		}
		l.buf = nil // a new process holds nothing
		if err := l.close(); err != nil {
			t.Fatal(err)
		}
		return open, c.Get("AAAAAAAAAAA")
	}
	l, _, _, _, err := openCursorLog(dir, "m", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	step := func(what string, err error, wantOpen []handover, wantA uint64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if open, atA := kill(); !slices.Equal(open, wantOpen) || atA != wantA {
			t.Errorf("killed after %s: owed %v, cursor at %d; want %v, %d", what, open, atA, wantOpen, wantA)
		}
	}
	step("handing a", l.handing(a), []handover{a}, 0)
	step("a handled", l.add(a), []handover{a}, 0) // held back: a is handed over again first
	step("handing b", l.handing(b), []handover{b}, 1)
	step("b handled, nothing more to handle", errors.Join(l.add(b), l.flush()), nil, 1)
	c := handover{"AAAAAAAAAAA", 2, 0xa2}
	step("handing c", l.handing(c), []handover{c}, 1)
	step("a checkpoint while c's handler was cut short", l.reset(), []handover{c}, 0)
}

// BenchmarkCursorLog is the cursor log's cost per signal handed over and
// handled: an advance written on its own (what the log did before
// hand-over lines), a hand-over and an advance in two writes, and as the
// log does it, the advance held back for the next hand-over's write.
func BenchmarkCursorLog(b *testing.B) {
	for _, c := range []struct {
		name string
		step func(l *cursorLog, h handover) error
	}{
		{"advance-only", func(l *cursorLog, h handover) error { return errors.Join(l.add(h), l.flush()) }},
		{"handover-then-advance", func(l *cursorLog, h handover) error {
			return errors.Join(l.handing(h), l.add(h), l.flush())
		}},
		{"handover-with-held-advance", func(l *cursorLog, h handover) error { return errors.Join(l.handing(h), l.add(h)) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, _, _, _, err := openCursorLog(b.TempDir(), "m", "s")
			if err != nil {
				b.Fatal(err)
			}
			defer l.close()
			h := handover{origin: "AAAAAAAAAAAAAAAAAAAAAA", id: 0x0123456789abcdef}
			for i := 0; b.Loop(); i++ {
				h.seq = uint64(i + 1)
				if err := c.step(l, h); err != nil {
					b.Fatal(err)
				}
				if l.n >= cursorCheckpoint {
					l.n = 0
					if err := l.f.Truncate(0); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
