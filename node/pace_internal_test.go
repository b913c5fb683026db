package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

// peerTimes reports a peer noted less than keep ago only, and past
// maxPeerTimes peers a new one pushes out those older than keep first,
// then the oldest: a join it forgot is answered, which costs a message,
// not a signal.
func TestPeerTimesForgetOldPeersFirst(t *testing.T) {
	var d peerTimes
	now := time.Unix(1000, 0)
	keep := 15 * time.Second
	old, fresh := peer.ID("old"), peer.ID("fresh")
	d.add(old, now.Add(-time.Minute), keep)
	d.add(fresh, now.Add(-time.Second), keep)
	if !d.recent(fresh, now, keep) || d.recent(fresh, now.Add(keep), keep) {
		t.Fatal("fresh: recent for keep only")
	}
	if d.recent(old, now, keep) || d.recent("never", now, keep) {
		t.Fatal("a peer noted before keep, or never, is recent")
	}
	for i := 2; i < maxPeerTimes; i++ {
		d.add(peer.ID(fmt.Sprint(i)), now, keep)
	}
	d.add("one more", now, keep) // full: the old entry goes, the recent ones stay
	if _, ok := d.at[old]; ok || !d.recent(fresh, now, keep) || !d.recent("one more", now, keep) {
		t.Fatalf("past the bound: old kept %v, fresh kept %v", ok, d.recent(fresh, now, keep))
	}
	d.add("and another", now, keep) // full of recent entries: the oldest goes
	if len(d.at) != maxPeerTimes || d.recent(fresh, now, keep) || !d.recent("and another", now, keep) {
		t.Fatalf("%d entries, fresh kept %v; want %d, the oldest (fresh) gone", len(d.at), d.recent(fresh, now, keep), maxPeerTimes)
	}
	d.add("2", now.Add(time.Second), keep) // one it holds is renewed, nothing pushed out
	if len(d.at) != maxPeerTimes || !d.recent("one more", now, keep) {
		t.Fatalf("renewing a held entry changed the set: %d entries", len(d.at))
	}
}
