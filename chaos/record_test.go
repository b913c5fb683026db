package chaos

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
	r, err := OpenRecorder(path)
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
	r, err = OpenRecorder(path)
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
	want := []Entry{{Start: true}, {ID: "a", Type: "t.x"}, {ID: "b", Type: "t.x", Cause: "a"},
		{Start: true}, {ID: "b", Type: "t.x", Cause: "a", Again: true}, {ID: "c", Type: "t.x"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d: got %+v, want %+v", i+1, got[i], want[i])
		}
	}
}
