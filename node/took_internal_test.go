package node

import (
	"math/rand/v2"
	"testing"
)

// Places holds exactly the places added, whatever their order (growing
// down by whole bytes, up by bytes), and max is each origin's highest.
func TestPlacesExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var p Places
	want := map[string]map[uint64]bool{"a": {}, "b": {}}
	for i := 0; i < 2000; i++ {
		o := "a"
		if i%3 == 0 {
			o = "b"
		}
		seq := 1 + rng.Uint64N(5000)
		if p == nil {
			p = Places{}
		}
		p.add(o, seq)
		want[o][seq] = true
	}
	for o, seqs := range want {
		var hi uint64
		for seq := uint64(0); seq <= 5001; seq++ {
			if p.has(o, seq) != seqs[seq] {
				t.Fatalf("%s:%d: has %v, want %v", o, seq, p.has(o, seq), seqs[seq])
			}
			if seqs[seq] {
				hi = seq
			}
		}
		if got := p.max().Get(o); got != hi {
			t.Fatalf("max of %s: %d, want %d", o, got, hi)
		}
	}
	if err := checkTook(map[string]Places{"peer/sub": p}); err != nil {
		t.Fatal(err)
	}
}

// A member that took more than maxTookBytes for one departed member stops
// recording for it (that member handles the rest again); more than
// maxTook members: the oldest goes.
func TestTookBounded(t *testing.T) {
	g := &groupMember{id: "me/g"}
	for seq := uint64(1); seq <= 8*maxTookBytes+1000; seq += 1 {
		g.tookFor("r/g", "o", seq)
	}
	if sz := g.took["r/g"].size(); sz > maxTookBytes {
		t.Fatalf("%d bytes for one member", sz)
	}
	for k := 0; k < maxTook+3; k++ {
		g.tookFor(string(rune('a'+k))+"/g", "o", 1)
	}
	if n := len(g.took); n > maxTook {
		t.Fatalf("%d members", n)
	}
	if err := checkTook(g.took); err != nil {
		t.Fatal(err)
	}
}

// A place far out (a hostile origin may number its signals up to 2^64-1)
// is not recorded, and the entry that announces the rest stays valid; a
// small place after a far one does not overflow (a review: makeslice
// panicked on the run goroutine, and a place past 2^62 made the node's
// own lease messages invalid everywhere).
func TestTookFarPlaces(t *testing.T) {
	g := &groupMember{id: "me/g"}
	g.tookFor("r/g", "o", 9)
	g.tookFor("r/g", "p", 1<<62+8)
	g.tookFor("r/g", "o", 1<<64-1)
	g.tookFor("r/g", "o", 8)
	if err := checkTook(g.tookSnapshot()); err != nil {
		t.Fatalf("own entry invalid: %v", err)
	}
	if p := g.took["r/g"]; !p.has("o", 9) || !p.has("o", 8) || p.has("p", 1<<62+8) {
		t.Fatalf("places %v", p)
	}
}
