package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// hostileID is the hostile node's flooder in the hand-made histories.
const hostileID = "12D3KooWFlooder"

// hostileSig is a signal of the hostile source in origin's name.
func hostileSig(id, origin string, seq uint64) Entry {
	return Entry{Source: HostileSource, ID: id, Type: "chaos.hostile", Peer: origin, Causal: causal(seq), Sum: "sum-" + id}
}

// hostileGood is good() with a hostile node H beside node 0 that did
// everything and was refused: two of its flood signals (sequences 2 and
// 4, their predecessors never sent) were given up on after DepWait,
// delivered and journaled everywhere; an honest signal cites one; the
// nodes counted each attack; their warnings name it.
func hostileGood() History {
	h := good()
	f2, f4 := hostileSig("hostile-flood-1-0", hostileID, 2), hostileSig("hostile-flood-1-1", hostileID, 4)
	c := sig("c", "C", 2, "", hostileID, 4)
	h.Ops = append(h.Ops, op("c", 2, "C", "eventual", "", Acked))
	for i := range h.Journals {
		h.Journals[i] = append(h.Journals[i], f2, f4, c)
		h.Records[i] = append(h.Records[i], f2, f4, c)
	}
	h.Hostile = &HostileReport{Peers: map[string]string{"flooder": hostileID, "forger-0": "12D3KooWForger"}, Blocks: []string{"bafyBAD"},
		Sent: map[string]int{AttackForgedSig: 2, AttackUnsigned: 1, AttackMixed: 1, AttackFlood: 2000, AttackHeadsOpen: 1,
			AttackHeadsBadCid: 1, AttackHeadsAbsent: 1, AttackJournalSig: 1, AttackJournalKey: 1, AttackOverwrite: 1, AttackTombstone: 1}}
	h.HostileOn = true
	h.Rejected = []map[string]float64{{"signature": 3, "origin": 1, "heads_seal": 1, "heads_cid": 1}, nil,
		{"journal_signature": 1, "journal_key": 1, "journal_overwrite": 1, "journal_tombstone": 1}}
	h.Counters[1] = map[string]float64{"dependency_not_found": 2}
	h.Logs[0] = append(h.Logs[0],
		`level=WARN msg="node: refused a journal block from another replica" reason=journal_key err="crdt: block bafyBAD refused"`,
		`level=WARN msg="node: delivered a signal without a dependency that no peer offered within DepWait" signal=hostile-flood-1-0 origin=`+PeerRef(hostileID))
	return h
}

func TestCheckPassesAHostileHistory(t *testing.T) {
	if v := Check(hostileGood()); !v.OK {
		t.Fatalf("anomalies: %v", v.Anomalies)
	}
	// A family that had no peer to send to all along (its host cut or
	// slow to connect, in a short schedule) tried: not an anomaly.
	h := hostileGood()
	for _, k := range []string{AttackHeadsOpen, AttackHeadsBadCid, AttackHeadsAbsent} {
		delete(h.Hostile.Sent, k)
	}
	h.Rejected[0]["heads_seal"], h.Rejected[0]["heads_cid"] = 0, 0
	h.Hostile.Unreached = map[string]int{AttackHeadsOpen: 4}
	if v := Check(h); !v.OK {
		t.Fatalf("a family that found no peer: %v", v.Anomalies)
	}
}

// Each way a hostile node could get through, or go untested, is caught
// under "hostile"; with that rule switched off (a mutation of the
// checker), no other rule sees it.
func TestCheckFindsHostileAnomalies(t *testing.T) {
	forged := hostileSig("hostile-forged-1-0", "A", 3)
	cases := []struct {
		name string
		mut  func(h *History)
	}{
		{"a signal forged in an honest node's name journaled and delivered everywhere", func(h *History) {
			for i := range h.Journals {
				h.Journals[i] = append(h.Journals[i], forged)
				h.Records[i] = append(h.Records[i], forged)
			}
		}},
		{"an attack no honest node counted", func(h *History) { h.Rejected[2]["journal_tombstone"] = 0 }},
		{"a flood no honest node counted", func(h *History) { h.Counters[1] = nil }},
		{"a family of attacks never sent", func(h *History) {
			for _, k := range []string{AttackHeadsOpen, AttackHeadsBadCid, AttackHeadsAbsent} {
				delete(h.Hostile.Sent, k)
			}
		}},
		{"the hostile node wrote no report", func(h *History) {
			h.Hostile = nil
			for i := range h.Journals { // then its signals are not its own either: none got in
				h.Journals[i] = slices.DeleteFunc(h.Journals[i], func(e Entry) bool { return e.Source == HostileSource || e.ID == "c" })
				h.Records[i] = slices.DeleteFunc(h.Records[i], func(e Entry) bool { return e.Source == HostileSource || e.ID == "c" })
			}
			h.Ops = slices.DeleteFunc(h.Ops, func(o Op) bool { return o.ID == "c" })
			h.Logs[0] = h.Logs[0][:1]
		}},
		{"the hostile node failed", func(h *History) { h.Hostile.Err = "herald: no bootstrap peer answered" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hostileGood()
			c.mut(&h)
			if !slices.Contains(kinds(Check(h)), "hostile") {
				t.Fatalf("want a hostile anomaly, got %v", Check(h).Anomalies)
			}
			if v := check(h, map[string]bool{"hostile": true}); !v.OK {
				t.Fatalf("only the hostile rule should see this history, but: %v", v.Anomalies)
			}
		})
	}
}

// The honest rules still apply: a forgery under a workload key is a
// content or origin anomaly, a hostile warning that does not name it is a
// log anomaly, and the hostile node's signals are exempt only in its own
// name.
func TestCheckHostileExemptionsArePrecise(t *testing.T) {
	cases := []struct {
		name, kind string
		mut        func(h *History)
	}{
		{"a signal forged in an honest node's name delivered, not journaled", "hostile", func(h *History) {
			h.Records[1] = append(h.Records[1], hostileSig("hostile-forged-1-0", "A", 3))
		}},
		{"a forged copy of an honest signal delivered", "content", func(h *History) {
			x := sig("a2", "A", 2, "")
			x.Sum = "forged"
			h.Records[1] = append(h.Records[1], x)
		}},
		{"an honest signal in another's name", "origin", func(h *History) {
			for i := range h.Journals {
				for k := range h.Journals[i] {
					if h.Journals[i][k].ID == "q" {
						h.Journals[i][k].Peer = hostileID
					}
				}
			}
		}},
		{"a refused block that is not the hostile node's", "log", func(h *History) {
			h.Logs[2] = []string{`level=WARN msg="node: refused a journal block from another replica" reason=journal_key err="crdt: block bafyOTHER refused"`}
		}},
		{"an honest dependency given up", "log", func(h *History) {
			h.Logs[2] = []string{`level=WARN msg="node: delivered a signal without a dependency that no peer offered within DepWait" signal=a2 origin=` + PeerRef("A")}
		}},
		{"an honest gap", "gap", func(h *History) {
			h.Journals[1] = slices.DeleteFunc(h.Journals[1], func(e Entry) bool { return e.ID == "a" })
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hostileGood()
			c.mut(&h)
			if got := kinds(Check(h)); !slices.Contains(got, c.kind) {
				t.Fatalf("want %q, got %v", c.kind, Check(h).Anomalies)
			}
		})
	}
}

// The hostile part: on in the default parts (full and short), kept by
// drawSetup, off in the long-outage schedule; its flood's counters are
// expected; its host is drawn apart from the other draws; it needs a
// command to start it.
func TestSetupHostile(t *testing.T) {
	for _, short := range []bool{false, true} {
		if !DefaultParts(short).Hostile {
			t.Fatalf("short=%v: no hostile node by default", short)
		}
	}
	s := drawSetup(5, 0, DefaultParts(false), false)
	if !s.Hostile || !strings.Contains(s.String(), "hostile") {
		t.Fatalf("setup %+v (%s)", s, s)
	}
	off := DefaultParts(false)
	off.Hostile = false
	if o := drawSetup(5, 0, off, false); o.Hostile || o.CausalBuffer != s.CausalBuffer || o.Chain != s.Chain || o.RecordDelay != s.RecordDelay {
		t.Fatalf("switching the hostile node off moved other draws: %+v vs %+v", o, s)
	}
	if o := drawSetup(5, 0, Parts{Outage: 100, Hostile: true}, false); o.Hostile {
		t.Fatal("the long outage runs alone")
	}
	e := expect(Setup{Hostile: true}, nil)
	if !slices.Contains(e.Counters, "missing_cause") || !slices.Contains(e.Counters, "causal_buffer_full") ||
		slices.ContainsFunc(e.Logs, func(l string) bool { return slices.Contains(hostileLogs, l) }) {
		t.Fatalf("expect: %+v", e)
	}
	for seed := uint64(1); seed < 50; seed++ {
		if h := hostileHost(seed, 5); h < 0 || h >= 5 {
			t.Fatalf("host %d", h)
		}
	}
	spec := Spec{Command: []string{"signalmesh", "node"}, Parts: Parts{Hostile: true}}.WithDefaults()
	if err := spec.Validate(); err != nil || !slices.Equal(spec.hostileCommand(), []string{"signalmesh", "hostile"}) {
		t.Fatalf("validate: %v, command %v", err, spec.hostileCommand())
	}
	spec.Command = []string{"my-node"}
	if spec.Validate() == nil {
		t.Fatal("a hostile node without a command to start it")
	}
	spec.Parts.Hostile, spec.Duration = false, 5*time.Second
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
}
