package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var groupT0 = time.Unix(1_000, 0) // the workload's start in the group histories

// stamped is e written to a record d after the workload started.
func stamped(e Entry, d time.Duration) Entry {
	e.T = groupT0.Add(d).UnixNano()
	return e
}

const sec = time.Second

// goodGroup is good() with a consumer group (hash by subject, lease 1 s)
// that handled each journaled signal once: a (1 s, subject s1) and a2
// (4 s, s1) by node 0, b (2 s, s2) by node 1, q (3 s, s3) by node 2. The
// weak signal w went to nobody (not required). No faults.
func goodGroup() History {
	h := good()
	a, b, q, a2 := h.Journals[0][0], h.Journals[0][1], h.Journals[0][2], h.Journals[0][3]
	for i, s := range []string{"s1", "s2", "s3", "s1"} {
		h.Ops[i].At, h.Ops[i].Subject = time.Duration(i+1)*sec, s
	}
	start := stamped(Entry{Start: true}, -10*sec)
	h.Group = &GroupHistory{Pattern: "**", Strategy: "hash:subject", Lease: sec, Start: groupT0, Records: [][]Entry{
		{start, stamped(a, 1100*time.Millisecond), stamped(a2, 4100*time.Millisecond)},
		{start, stamped(b, 2100*time.Millisecond)},
		{start, stamped(q, 3100*time.Millisecond)},
	}}
	return h
}

// entry is the journaled signal id of the history.
func (h History) entry(id string) Entry {
	for _, e := range h.Journals[0] {
		if e.ID == id {
			return e
		}
	}
	panic(id)
}

func groupKinds(v Verdict) []string {
	var out []string
	for _, a := range v.Anomalies {
		if a.Kind == "group" {
			out = append(out, a.Detail)
		}
	}
	return out
}

func TestGroupPassesAGoodHistory(t *testing.T) {
	v := Check(goodGroup())
	if !v.OK {
		t.Fatalf("anomalies: %v", v.Anomalies)
	}
	g := v.Group
	if g == nil || g.Required != 4 || g.Handled != 4 || g.Handlings != 4 || g.Duplicates != 0 || g.Ordered != 4 {
		t.Fatalf("figures %+v", g)
	}
}

// Each defect is a group anomaly.
func TestGroupFindsEachAnomaly(t *testing.T) {
	cases := []struct {
		name string
		want string // in the detail
		mut  func(h *History)
	}{
		{"never handled", "never handled", func(h *History) {
			h.Group.Records[1] = h.Group.Records[1][:1] // node 1 never handled b
		}},
		{"duplicate outside any window", "outside every failover window", func(h *History) {
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a"), 1200*time.Millisecond))
		}},
		{"duplicate in a kill window of another node", "outside every failover window", func(h *History) {
			// node 1 killed at 4 s; a2 handled by nodes 0 and 2, not node 1
			h.Group.Faults = []Fault{{Kind: Kill, At: 4 * sec, For: sec, Node: 1}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 5*sec))
		}},
		{"duplicate beside a member killed in a full mesh", "outside every failover window", func(h *History) {
			// as the chain case of TestGroupExcusesDuplicatesInFailoverWindows,
			// but the nodes reach each other without node 1
			h.Group.Faults = []Fault{{Kind: Kill, At: 3500 * time.Millisecond, For: sec, Node: 1}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"duplicate beside a chain's end node killed", "outside every failover window", func(h *History) {
			// the chain is 0-1-2: node 2, an end, parts nobody
			h.Group.Chain = true
			h.Group.Faults = []Fault{{Kind: Kill, At: 3500 * time.Millisecond, For: sec, Node: 2}}
			h.Group.Records[1] = append(h.Group.Records[1], stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"duplicate on one side of a chain's inner node killed", "outside every failover window", func(h *History) {
			// node 1 parts 0 from 2; node 0 handling a2 twice is not that
			h.Group.Chain = true
			h.Group.Faults = []Fault{{Kind: Kill, At: 3500 * time.Millisecond, For: sec, Node: 1}}
			h.Group.Records[0] = append(h.Group.Records[0], stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"duplicate after a clean restart", "outside every failover window", func(h *History) {
			h.Group.Faults = []Fault{{Kind: Restart, At: 3500 * time.Millisecond, For: sec, Node: 0}}
			h.Group.Records[1] = append(h.Group.Records[1], stamped(h.entry("a2"), 4500*time.Millisecond))
		}},
		{"handled, never published", "never published", func(h *History) {
			h.Group.Records[0] = append(h.Group.Records[0], stamped(Entry{Source: srcMain, ID: "ghost", Type: "chaos.cause"}, 5*sec))
		}},
		{"a subject on two members", "between the same failover windows", func(h *History) {
			h.Group.Records[0] = h.Group.Records[0][:2] // a2 (s1) by node 2, a (s1) by node 0
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 4100*time.Millisecond))
		}},
		{"a subject out of sequence", "sequence 1 handled after 2", func(h *History) {
			r := h.Group.Records[0]
			r[1], r[2] = stamped(h.entry("a2"), 1100*time.Millisecond), stamped(h.entry("a"), 4100*time.Millisecond)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := goodGroup()
			c.mut(&h)
			got := groupKinds(Check(h))
			if !slices.ContainsFunc(got, func(d string) bool { return strings.Contains(d, c.want) }) {
				t.Fatalf("want a group anomaly %q, got %v", c.want, Check(h).Anomalies)
			}
		})
	}
}

// Duplicates inside failover windows pass, and are counted.
func TestGroupExcusesDuplicatesInFailoverWindows(t *testing.T) {
	cases := []struct {
		name string
		mut  func(h *History)
	}{
		{"kill: the dead member's last signals handled again", func(h *History) {
			// node 0 killed at 4.5 s: a2, which it handled at 4.1 s, is
			// handled again by node 2 after the lease
			h.Group.Faults = []Fault{{Kind: Kill, At: 4500 * time.Millisecond, For: sec, Node: 0}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 5600*time.Millisecond))
		}},
		{"partition: both sides, late after the heal, published during the cut", func(h *History) {
			h.Group.Faults = []Fault{{Kind: Halves, At: 3500 * time.Millisecond, For: sec, Groups: [][]int{{0}, {1, 2}}}}
			h.Group.Records[1] = append(h.Group.Records[1], stamped(h.entry("a2"), 30*sec))
		}},
		{"join: a restarted member shares until the others hear of it", func(h *History) {
			h.Group.Records[1] = append(h.Group.Records[1], stamped(Entry{Start: true}, 3900*time.Millisecond), stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"chain: a member down between two others splits them", func(h *History) {
			// nodes 0 and 2 are chained through node 1, killed at 3.5 s:
			// each side took subject s1's a2 (seeds 12073, 12208)
			h.Group.Chain = true
			h.Group.Faults = []Fault{{Kind: Kill, At: 3500 * time.Millisecond, For: sec, Node: 1}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"chain: a clean restart of an inner member parts the others", func(h *History) {
			h.Group.Chain = true
			h.Group.Faults = []Fault{{Kind: Restart, At: 3500 * time.Millisecond, For: sec, Node: 1}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 4200*time.Millisecond))
		}},
		{"pause: the paused member's queue after SIGCONT", func(h *History) {
			h.Group.Faults = []Fault{{Kind: Pause, At: 5 * sec, For: 2 * sec, Node: 2}}
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a2"), 7100*time.Millisecond))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := goodGroup()
			c.mut(&h)
			v := Check(h)
			if !v.OK || v.Group.Duplicates != 1 || v.Group.Extra != 1 {
				t.Fatalf("anomalies %v, figures %+v", v.Anomalies, v.Group)
			}
		})
	}
}

// The mutations: windows widened to the whole schedule pass a duplicate
// outside every window; without the at-least-once rule a signal the
// group never handled passes. Each part of the rule is needed.
func TestGroupMutationsPass(t *testing.T) {
	cases := []struct {
		mutation string
		mut      func(h *History)
	}{
		{mutWideWindows, func(h *History) {
			h.Group.Records[2] = append(h.Group.Records[2], stamped(h.entry("a"), 1200*time.Millisecond))
		}},
		{mutNoAtLeastOnce, func(h *History) { h.Group.Records[1] = h.Group.Records[1][:1] }},
	}
	for _, c := range cases {
		t.Run(c.mutation, func(t *testing.T) {
			h := goodGroup()
			c.mut(&h)
			if Check(h).OK {
				t.Fatal("the rule passes the defect")
			}
			if v := check(h, map[string]bool{c.mutation: true}); !v.OK {
				t.Fatalf("the mutated rule should pass it, but: %v", v.Anomalies)
			}
		})
	}
}

// The seed draws the group's strategy and lease (hash:subject mostly),
// and leaves the other parts' draws alone.
func TestGroupDraws(t *testing.T) {
	by := map[string]int{}
	for seed := uint64(1); seed <= 200; seed++ {
		all := drawSetup(seed, 0, DefaultParts(false), false)
		p := DefaultParts(false)
		p.Group = false
		noGroup := drawSetup(seed, 0, p, false)
		if all.Group == "" || all.Lease == "" || noGroup.Group != "" {
			t.Fatalf("seed %d: %+v vs %+v", seed, all, noGroup)
		}
		all.Group, all.Lease = "", ""
		if all != noGroup {
			t.Fatalf("seed %d: the group moved other draws: %+v vs %+v", seed, all, noGroup)
		}
		by[drawSetup(seed, 0, DefaultParts(false), false).Group]++
	}
	if by["hash:subject"] < 90 || by["balanced"] == 0 || by["local-first"] == 0 {
		t.Fatalf("strategies drawn: %v", by)
	}
}
