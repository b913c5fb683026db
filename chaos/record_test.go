package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

// A record survives a reopen, drops a torn last line, marks restarts and
// writes a second delivery of an id as Again.
func TestRecorderAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	sig := func(id, cause string) *signalmesh.Signal {
		opts := []signalmesh.Option{signalmesh.WithID(id)}
		if cause != "" {
			opts = append(opts, signalmesh.WithCauseID(cause))
		}
		s, err := signalmesh.New("t.x", "/test", nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r, err := OpenRecorder(path, Delay{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*signalmesh.Signal{sig("a", ""), sig("b", "a")} {
		if err := r.Handle(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"id":"c","ty`) // a crash in the middle of a line
	f.Close()
	r, err = OpenRecorder(path, Delay{})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Handle(context.Background(), sig("b", "a"))
	_ = r.Handle(context.Background(), sig("c", ""))
	_ = r.Close()
	got, err := ReadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	none := DataSum(nil)
	want := []Entry{{Start: true}, {Source: "/test", ID: "a", Type: "t.x", Sum: none}, {Source: "/test", ID: "b", Type: "t.x", Cause: "a", Sum: none},
		{Start: true}, {Source: "/test", ID: "b", Type: "t.x", Cause: "a", Again: true, Sum: none}, {Source: "/test", ID: "c", Type: "t.x", Sum: none}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	var last int64
	for i := range want {
		if got[i].T < last { // stamped, in order
			t.Fatalf("line %d: time %d before %d", i+1, got[i].T, last)
		}
		last = got[i].T
		got[i].T = 0
		if got[i] != want[i] {
			t.Fatalf("line %d: got %+v, want %+v", i+1, got[i], want[i])
		}
	}
}

// A slow handler's delay is the same for a signal on every node, within
// its range, and spread over it.
func TestDelay(t *testing.T) {
	d, err := ParseDelay("300us-200ms")
	if err != nil || d.String() != "300µs-200ms" {
		t.Fatalf("%v %v", d, err)
	}
	short, long := 0, 0
	for i := 0; i < 1000; i++ {
		k := Key{"/s", fmt.Sprint(i)}
		x := d.For(k)
		if x != d.For(k) || x < d.Min || x > d.Max {
			t.Fatalf("%s: %v", k, x)
		}
		if x < 2*time.Millisecond {
			short++
		}
		if x > 50*time.Millisecond {
			long++
		}
	}
	if short < 200 || long < 100 {
		t.Fatalf("not spread: %d short, %d long", short, long)
	}
	if x := d.For(Key{HostileSource, "hostile-flood-1-1"}); x != 0 {
		t.Fatalf("the hostile node's signal waits %v, want 0", x)
	}
	for _, bad := range []string{"1ms", "2ms-1ms", "x-1ms", "0s-1ms"} {
		if _, err := ParseDelay(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
