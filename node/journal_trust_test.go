package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// A member of the mesh (h: a node with a test hook that writes raw entries
// into its replica of the journal, as a modified peer could) attacks the
// journal through the CRDT: it writes an entry in another's name, takes the
// victim's next sequence, overwrites and tombstones an entry, and
// equivocates on its own place. Each delta is refused before go-ds-crdt
// merges it, on the victim and on a bystander, and counted by reason; the
// honest signals, the victim's next one included, are delivered and
// journaled everywhere. (SIGNALMESH_TEST_NOVERIFY=1 turns the checks off:
// then the forged entries are merged and the test fails.)
func TestForgedJournalEntriesAreRefused(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	nodes := cluster(t, 3, nil)
	v, b, h := nodes[0], nodes[1], nodes[2]
	mesh := v.Mesh()
	recs := []*recorder{newRecorder(), newRecorder()}
	for i, n := range []*peerNode{v, b} {
		if _, err := n.Subscribe("**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	vref, href := causal.PeerRef(v.ID().String()), causal.PeerRef(h.ID().String())
	entry := func(n *peerNode, ref string, seq uint64) *signalmesh.Signal {
		raw, err := n.JournalGet(ctx, journal.SignalKey(ref, seq))
		if err != nil {
			return nil
		}
		s, err := signalmesh.DecodeBinary(raw, signalmesh.Limits{})
		if err != nil {
			t.Fatalf("entry %s:%d: %v", ref, seq, err)
		}
		return s
	}
	journaled := func(ref string, seq uint64, id string) {
		t.Helper()
		for _, n := range []*peerNode{v, b} {
			eventually(t, 20*time.Second, fmt.Sprintf("%s:%d journaled", ref, seq), func() bool {
				s := entry(n, ref, seq)
				return s != nil && s.ID == id
			})
		}
	}
	v1, h1 := mustSignal(t, "order.created"), mustSignal(t, "order.noted")
	if err := v.Publish(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(ctx, h1); err != nil {
		t.Fatal(err)
	}
	journaled(vref, 1, v1.ID)
	journaled(href, 1, h1.ID)

	want := map[string]int64{}
	attack := func(what, reason string, do func() error) {
		t.Helper()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want[reason]++
		for _, n := range []*peerNode{v, b} {
			eventually(t, 20*time.Second, what+" refused as "+reason, func() bool {
				st, err := n.Status(ctx)
				return err == nil && st.Rejected[reason] == want[reason]
			})
		}
	}
	forge := func(typ, origin, stamp string) *signalmesh.Signal {
		return mustSignal(t, typ, signalmesh.WithExtension(signalmesh.ExtPeer, origin),
			signalmesh.WithExtension(signalmesh.ExtCausal, stamp))
	}
	// The victim's next place, in its name (h can only sign with its own key).
	next := signedWire(t, mesh, h.Key(), forge("order.cancelled", v.ID().String(), "2/2/"))
	attack("an entry in v's name at v's next place", "journal_signature", func() error {
		return h.JournalPut(ctx, journal.SignalKey(vref, 2), next)
	})
	// h's own signal, truly signed, under v's place.
	mine := signedWire(t, mesh, h.Key(), forge("order.cancelled", h.ID().String(), "3/3/"))
	attack("h's signal at v's place", "journal_key", func() error {
		return h.JournalPut(ctx, journal.SignalKey(vref, 3), mine)
	})
	// v's first entry, rewritten.
	rewrite := signedWire(t, mesh, h.Key(), forge("order.created", v.ID().String(), "1/1/"))
	attack("v's entry overwritten", "journal_overwrite", func() error {
		return h.JournalPut(ctx, journal.SignalKey(vref, 1), rewrite)
	})
	attack("v's entry tombstoned", "journal_tombstone", func() error {
		return h.JournalDelete(ctx, journal.SignalKey(vref, 1))
	})
	// h equivocates on its own first place: signed by h, but not what h
	// journaled there first.
	other := forge("order.noted", h.ID().String(), "1/1/")
	other.Data = []byte(`"the other story"`)
	attack("h's own entry rewritten", "journal_overwrite", func() error {
		return h.JournalPut(ctx, journal.SignalKey(href, 1), signedWire(t, mesh, h.Key(), other))
	})

	// v's real next signal takes its place everywhere; h's honest signals
	// still go through (their blocks link to refused ones: those are not
	// merged, what is above them is).
	v2, h2 := mustSignal(t, "order.paid"), mustSignal(t, "order.shipped")
	if err := v.Publish(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(ctx, h2); err != nil {
		t.Fatal(err)
	}
	journaled(vref, 2, v2.ID)
	journaled(href, 2, h2.ID)
	for i, rec := range recs {
		eventually(t, 20*time.Second, "the honest signals delivered", func() bool { return rec.count() == 4 })
		for _, s := range rec.snapshot() {
			if s.ID != v1.ID && s.ID != v2.ID && s.ID != h1.ID && s.ID != h2.ID {
				t.Errorf("node %d delivered a forged signal %s (%s)", i, s.ID, s.Type)
			}
		}
	}
	for _, n := range []*peerNode{v, b} {
		if s := entry(n, vref, 1); s == nil || s.ID != v1.ID {
			t.Errorf("v:1 is %v, want %s", s, v1.ID)
		}
		if s := entry(n, href, 1); s == nil || s.ID != h1.ID || string(s.Data) != string(h1.Data) {
			t.Errorf("h:1 is %v, want %s", s, h1.ID)
		}
		if s := entry(n, vref, 3); s != nil {
			t.Errorf("v:3 holds %s", s.ID)
		}
		st, _ := n.Status(ctx)
		for reason, k := range want {
			if st.Rejected[reason] != k {
				t.Errorf("rejected %s: %d, want %d", reason, st.Rejected[reason], k)
			}
		}
	}
}
