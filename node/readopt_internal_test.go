package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// A delivered signal whose adoption fails (a store write error) is tried
// again one Params.Adopt later, until it is journaled: it used to leave
// the fresh set with the failed batch, and an in-memory node had no other
// copy of it (its origin gone, nobody journaled it).
func TestFailedAdoptionIsTriedAgain(t *testing.T) {
	var faults atomic.Int32
	faults.Store(2)
	testAdoptFault = func() error {
		if faults.Add(-1) >= 0 {
			return errors.New("injected store failure")
		}
		return nil
	}
	defer func() { testAdoptFault = nil }()
	ctx := context.Background()
	n, err := New(ctx, Config{Mesh: "readopt", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Params: Params{Adopt: 100 * time.Millisecond, Resync: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	key, origin := testPeer(t)
	s := stampedSig(t, "lonely", origin, 1, 1, nil)
	if err := Sign("readopt", key, s); err != nil {
		t.Fatal(err)
	}
	n.send(inbound{s: s, via: viaGossip}) // delivered; its origin never journals it
	at := journal.SignalKey(causal.PeerRef(origin), 1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The adopter counts a signal once its batch is written: after
		// the entry can be read.
		if ok, err := n.repl.Has(ctx, at); err == nil && ok && n.m.adopted.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not journaled after two failed adoptions (faults left %d, adopted %d)", faults.Load(), n.m.adopted.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := faults.Load(); f >= 0 {
		t.Fatalf("journaled with %d injected failures unused", f+1)
	}
	if a := n.m.adopted.Load(); a != 1 {
		t.Fatalf("adopted %d, want 1", a)
	}
}
