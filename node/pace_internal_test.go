package node

import (
	"testing"
	"time"
)

// A burst of joins gets one answer, joinQuiet or more after the first
// join; the next burst's answer comes joinGap or more after it.
func TestJoinPacerAnswersABurstOnce(t *testing.T) {
	p := newJoinPacer()
	defer p.stop()
	start := time.Now()
	for range 31 {
		p.join(31)
	}
	<-p.C()
	first := time.Now()
	p.answered()
	if d := first.Sub(start); d < joinQuiet {
		t.Fatalf("answered %v after the first join, want at least %v", d, joinQuiet)
	}
	select {
	case <-p.C():
		t.Fatal("a second answer for one burst")
	case <-time.After(joinQuiet + 31*joinJitterPer):
	}
	p.join(1)
	<-p.C()
	if d := time.Since(first); d < joinGap {
		t.Fatalf("the next answer %v after the last, want at least %v", d, joinGap)
	}
}
