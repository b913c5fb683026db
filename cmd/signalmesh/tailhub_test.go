package main

import (
	"context"
	"testing"

	"github.com/signalmesh/signalmesh"
)

// The hub numbers deliveries, resumes after a known id, and tells a reader
// that fell out of its ring how many it lost.
func TestTailHubResumeAndLoss(t *testing.T) {
	h := newTailHub(nil)
	s, _ := signalmesh.New("a.b", "/t", nil)
	for range 5000 {
		_ = h.add(context.Background(), s)
	}
	for _, c := range []struct {
		last  string
		from  uint64
		known bool
	}{
		{"", 5001, true},
		{h.id(10), 11, true},
		{h.id(5000), 5001, true},
		{h.id(5001), 1, false}, // not delivered yet: not ours
		{"ffff.10", 1, false},  // another run
		{"garbage", 1, false},
	} {
		if from, known := h.resume(c.last); from != c.from || known != c.known {
			t.Errorf("resume(%q) = %d %v, want %d %v", c.last, from, known, c.from, c.known)
		}
	}
	sigs, first, lost, _ := h.read(11, 100)
	if oldest := uint64(5001 - tailHistory); first != oldest || lost != oldest-11 || len(sigs) != 100 {
		t.Errorf("read(11): first %d, lost %d, %d signals", first, lost, len(sigs))
	}
	sigs, first, lost, wake := h.read(4990, 100)
	if first != 4990 || lost != 0 || len(sigs) != 11 {
		t.Errorf("read(4990): first %d, lost %d, %d signals", first, lost, len(sigs))
	}
	select {
	case <-wake:
		t.Fatal("woken before a new signal")
	default:
	}
	_ = h.add(context.Background(), s)
	<-wake // closed by the new signal
}
