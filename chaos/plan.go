package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The faults a schedule draws from.
const (
	// Halves cuts the nodes into two groups that cannot reach each other.
	Halves Kind = "halves"
	// Isolate cuts one node off from all others.
	Isolate Kind = "isolate"
	// Bridge cuts the nodes into two groups that cannot reach each other,
	// except through one node that reaches both (a non-transitive cut).
	Bridge Kind = "bridge"
	// Flap cuts the nodes into halves and heals them, again and again.
	Flap Kind = "flap"
	// Kill sends SIGKILL to a node and restarts it on its data directory.
	Kill Kind = "kill"
	// Pause stops a node with SIGSTOP and resumes it with SIGCONT.
	Pause Kind = "pause"
	// Slow shapes one node's link (netem delay and loss where the kernel
	// has it, else a tbf rate limit): network namespaces only.
	Slow Kind = "slow"
)

// AllKinds are the faults in the order a report lists them.
var AllKinds = []Kind{Halves, Isolate, Bridge, Flap, Kill, Pause, Slow}

// Fault is one fault of a schedule: it starts At after the workload starts
// and is lifted after For.
type Fault struct {
	Kind Kind          `json:"kind"`
	At   time.Duration `json:"at"`
	For  time.Duration `json:"for"`
	// Node is the node a kill, pause, isolate or slow acts on, and the
	// bridge node of a bridge cut.
	Node int `json:"node"`
	// Groups are the sides of a cut (halves, bridge, flap); a bridge node
	// is in both.
	Groups [][]int `json:"groups,omitempty"`
	// Period is how long each cut and each heal of a flap lasts.
	Period time.Duration `json:"period,omitempty"`
}

func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.2fs +%.2fs %-7s", f.At.Seconds(), f.For.Seconds(), f.Kind)
	switch f.Kind {
	case Halves, Bridge, Flap:
		fmt.Fprintf(&b, " %v", f.Groups)
		if f.Kind == Flap {
			fmt.Fprintf(&b, " every %v", f.Period)
		}
	default:
		fmt.Fprintf(&b, " node %d", f.Node)
	}
	return b.String()
}

// Plan draws a schedule of faults for nodes over the workload's length d,
// from seed: the same arguments give the same schedule. Faults come one
// after another with a quiet gap between them (everything healed), each
// lasting 1-3 s, and the last one ends at least 1 s before d. kinds are the
// faults to draw from (empty: AllKinds).
func Plan(seed uint64, nodes int, d time.Duration, kinds []Kind) []Fault {
	if len(kinds) == 0 {
		kinds = AllKinds
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	var out []Fault
	at := between(500*time.Millisecond, 1500*time.Millisecond)
	for {
		f := Fault{Kind: kinds[rng.IntN(len(kinds))], At: at, For: between(time.Second, 3*time.Second), Node: rng.IntN(nodes)}
		if at+f.For > d-time.Second {
			return out
		}
		perm := rng.Perm(nodes)
		switch f.Kind {
		case Halves:
			cut := 1 + rng.IntN(nodes-1)
			f.Groups = [][]int{sorted(perm[:cut]), sorted(perm[cut:])}
		case Flap:
			cut := 1 + rng.IntN(nodes-1)
			f.Groups = [][]int{sorted(perm[:cut]), sorted(perm[cut:])}
			f.Period = between(200*time.Millisecond, 600*time.Millisecond)
		case Bridge:
			// perm[0] bridges; the rest split in two non-empty sides.
			f.Node = perm[0]
			rest := perm[1:]
			cut := 1 + rng.IntN(max(len(rest)-1, 1))
			f.Groups = [][]int{sorted(append([]int{f.Node}, rest[:cut]...)), sorted(append([]int{f.Node}, rest[cut:]...))}
		}
		out = append(out, f)
		at += f.For + between(500*time.Millisecond, 1500*time.Millisecond)
	}
}

func sorted(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// cutPairs lists the pairs (i < j) that a set of groups cuts: two nodes
// that share no group cannot reach each other.
func cutPairs(nodes int, groups [][]int) [][2]int {
	in := make([]map[int]bool, nodes)
	for i := range in {
		in[i] = map[int]bool{}
	}
	for g, grp := range groups {
		for _, n := range grp {
			in[n][g] = true
		}
	}
	var out [][2]int
	for i := 0; i < nodes; i++ {
		for j := i + 1; j < nodes; j++ {
			share := false
			for g := range in[i] {
				share = share || in[j][g]
			}
			if !share {
				out = append(out, [2]int{i, j})
			}
		}
	}
	return out
}

// isolateGroups are the groups that cut node off from the others.
func isolateGroups(nodes, node int) [][]int {
	var rest []int
	for i := 0; i < nodes; i++ {
		if i != node {
			rest = append(rest, i)
		}
	}
	return [][]int{{node}, rest}
}
