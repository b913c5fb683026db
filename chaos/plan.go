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
	// OneWay cuts one direction only: the first group cannot send to the
	// second (a blackhole route on one side; on loopback the first
	// group's gaters refuse the second, which cuts both ways).
	OneWay Kind = "oneway"
	// Restart stops a node cleanly (SIGTERM) and starts it again on its
	// data directory after For.
	Restart Kind = "restart"
	// LongPause is a pause of 6-8 s, longer than the workload's 5 s client
	// timeout.
	LongPause Kind = "longpause"
	// SettleKill sends SIGKILL to a node while the harness waits for
	// quiescence after the heal, and restarts it after For.
	SettleKill Kind = "settlekill"
)

// AllKinds are the faults in the order a report lists them.
var AllKinds = []Kind{Halves, Isolate, Bridge, Flap, Kill, Pause, Slow, OneWay, Restart, LongPause, SettleKill}

// processKind says whether a fault acts on a node's process.
func processKind(k Kind) bool {
	return k == Kill || k == Pause || k == Restart || k == LongPause || k == SettleKill
}

// nodeKind says whether a fault holds one node (its process or its link):
// two such faults never overlap on one node.
func nodeKind(k Kind) bool { return processKind(k) || k == Slow }

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
	case Halves, Bridge, Flap, OneWay:
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
// from seed: the same arguments give the same schedule. Each fault lasts
// 1-3 s (a long pause 6-8 s); after each, the next starts either after a
// quiet gap of 0.5-1.5 s or, one time in three, while it is still under
// way (overlapping faults; two process faults never overlap on one node).
// The last one ends at least 1 s before d; a settle kill, if drawn, comes
// at d, after the heal. kinds are the faults to draw from (empty:
// AllKinds). With cover, each kind is drawn once, in a seeded order, as
// far as d allows, overlapping (the CI run deals every kind to some
// schedule, see Deal).
func Plan(seed uint64, nodes int, d time.Duration, kinds []Kind, cover bool) []Fault {
	if len(kinds) == 0 {
		kinds = AllKinds
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	deck := slices.Clone(kinds)
	rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
	if cover { // the long pause first, where it fits
		slices.SortStableFunc(deck, func(a, b Kind) int { return cmpBool(b == LongPause, a == LongPause) })
	}
	busy := make([]time.Duration, nodes) // until when a process fault holds each node
	var out []Fault
	settled := false
	at := between(500*time.Millisecond, 1500*time.Millisecond)
	for k := 0; ; k++ {
		kind := kinds[rng.IntN(len(kinds))]
		if cover {
			if k >= len(deck) {
				return out
			}
			kind = deck[k]
		}
		f := drawFault(rng, kind, nodes, at, between)
		if f.Kind == SettleKill {
			// Once, at the end; it takes no workload time.
			if !settled {
				settled = true
				f.At = d
				out = append(out, f)
			}
			continue
		}
		if at+f.For > d-time.Second {
			if cover && k+1 < len(deck) {
				continue // a shorter one may still fit
			}
			return out
		}
		if nodeKind(f.Kind) {
			for tries := 0; busy[f.Node] > at && tries < nodes; tries++ {
				f.Node = (f.Node + 1) % nodes
			}
			if busy[f.Node] > at {
				at = busy[f.Node]
				continue
			}
			busy[f.Node] = at + f.For
		}
		out = append(out, f)
		if rng.IntN(3) == 0 || cover { // the next overlaps this one
			at += f.For * time.Duration(3+rng.IntN(5)) / 10
		} else {
			at += f.For + between(500*time.Millisecond, 1500*time.Millisecond)
		}
	}
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Deal splits kinds over schedules, in an order shuffled from seed: each
// kind goes to one schedule (the cover mode of a run).
func Deal(seed uint64, kinds []Kind, schedules int) [][]Kind {
	deck := slices.Clone(kinds)
	rng := rand.New(rand.NewPCG(seed, 0xdea1))
	rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
	out := make([][]Kind, schedules)
	for k, kind := range deck {
		out[k%schedules] = append(out[k%schedules], kind)
	}
	return out
}

// drawFault draws one fault of kind at at; it takes the same number of
// draws for every kind.
func drawFault(rng *rand.Rand, kind Kind, nodes int, at time.Duration, between func(lo, hi time.Duration) time.Duration) Fault {
	f := Fault{Kind: kind, At: at, For: between(time.Second, 3*time.Second), Node: rng.IntN(nodes)}
	perm := rng.Perm(nodes)
	cut := 1 + rng.IntN(nodes-1)
	period := between(200*time.Millisecond, 600*time.Millisecond)
	long := between(6*time.Second, 8*time.Second)
	switch f.Kind {
	case Halves, OneWay:
		f.Groups = [][]int{sorted(perm[:cut]), sorted(perm[cut:])}
	case Flap:
		f.Groups = [][]int{sorted(perm[:cut]), sorted(perm[cut:])}
		f.Period = period
	case Bridge:
		// perm[0] bridges; the rest split in two non-empty sides.
		f.Node = perm[0]
		rest := perm[1:]
		c := 1 + (cut-1)%max(len(rest)-1, 1)
		f.Groups = [][]int{sorted(append([]int{f.Node}, rest[:c]...)), sorted(append([]int{f.Node}, rest[c:]...))}
	case LongPause:
		f.For = long
	}
	return f
}

func sorted(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// directed lists both directions of each pair.
func directed(pairs [][2]int) [][2]int {
	var out [][2]int
	for _, p := range pairs {
		out = append(out, p, [2]int{p[1], p[0]})
	}
	return out
}

// oneWayPairs lists the directions a one-way cut blocks: from every node
// of the first group to every node of the second.
func oneWayPairs(groups [][]int) [][2]int {
	var out [][2]int
	for _, a := range groups[0] {
		for _, b := range groups[1] {
			out = append(out, [2]int{a, b})
		}
	}
	return out
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
