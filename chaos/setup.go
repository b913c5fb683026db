package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Parts are the parts of the workload, each switchable. A schedule draws,
// from its seed, which of the optional ones it runs (Setup).
type Parts struct {
	// Ephemeral nodes per schedule: in memory (no data directory, a fresh
	// identity), each joins, publishes 1-3 signals and, after the answers,
	// leaves by SIGTERM or kill -9, never to return. 0: none.
	Ephemeral int `json:"ephemeral"`
	// OutOfBand: half of the causes are other nodes' publishes (learned
	// by the client, not by the node), the rest the publishing node's own
	// deliveries; both biased to the most recent.
	OutOfBand bool `json:"out_of_band"`
	// SlowSubscriber: on some schedules the recording handler is slow
	// (0.3 ms to 20-200 ms, log-uniform) and the subscriber queue small
	// (4-64).
	SlowSubscriber bool `json:"slow_subscriber"`
	// Limits: on some schedules the causal buffer is scaled down (16-256).
	Limits bool `json:"limits"`
	// Reuse: 2 % of the ops publish an id published before on another
	// node, under another source.
	Reuse bool `json:"reuse"`
	// Retry: a publish whose outcome is unknown is retried once, with the
	// same (source, id) and content, on another node.
	Retry bool `json:"retry"`
	// PartialMesh: on some schedules the nodes bootstrap a chain (each to
	// its predecessor), not a full mesh: gossip goes over several hops.
	PartialMesh bool `json:"partial_mesh"`
	// Hostile: a hostile node runs beside one node for the workload
	// (forged, unsigned and mixed-origin gossip, a flood of never-ready
	// signals, bogus head announcements, journal blocks in others' names);
	// the honest nodes must refuse and count each attack.
	Hostile bool `json:"hostile,omitempty"`
	// Outage, when positive, is the long-outage schedule: one node is
	// isolated while Outage signals are published (in batches), then
	// healed; no other faults. Not for CI.
	Outage int `json:"outage,omitempty"`
	// Group: every node also runs a consumer group member (group
	// "chaos", the daemon's -record-group-file) beside its persistent
	// subscription, with a strategy drawn from the seed (hash:subject
	// mostly, balanced or local-first sometimes) and a short lease (1-2 s)
	// so that failovers happen within a schedule; the workload's signals
	// carry one of 12 subjects (by a hash of the id). The group rule
	// checks it.
	Group bool `json:"group,omitempty"`
	// Retention: the nodes keep signals for a bounded age and prune
	// (Config.Retention, Params.Prune) while the faults happen. The
	// workload's first half is published doomed: each signal's time
	// attribute puts it 1-5 s from the end of its retention, so it leaves
	// every journal, and its journal blocks the disk, during the
	// schedule; the rest stays retained. The rules hold the retained
	// signals to everything; a doomed one may be missing anywhere (a
	// replica may never have had it), and need not precede, as a cause or
	// a dependency, what a replica delivered after it had expired.
	Retention bool `json:"retention,omitempty"`
	// None says every part is off on purpose (the zero Parts means
	// DefaultParts).
	None bool `json:"none,omitempty"`
}

// DefaultParts is every part on: 50 ephemeral nodes a schedule (at least 50
// identities) (4 short), a hostile node, and retention.
func DefaultParts(short bool) Parts {
	p := Parts{Ephemeral: 50, OutOfBand: true, SlowSubscriber: true, Limits: true, Reuse: true, Retry: true, PartialMesh: true, Group: true, Hostile: true, Retention: true}
	if short {
		p.Ephemeral = 4
	}
	return p
}

// Setup is what one schedule drew from its seed: the node parameters and
// the optional parts it runs.
type Setup struct {
	Ephemeral       int    `json:"ephemeral"`
	OutOfBand       bool   `json:"out_of_band"`
	Reuse           bool   `json:"reuse"`
	Retry           bool   `json:"retry"`
	RecordDelay     string `json:"record_delay,omitempty"`     // the daemon's -record-delay
	SubscriberQueue int    `json:"subscriber_queue,omitempty"` // 0: the node's default
	CausalBuffer    int    `json:"causal_buffer,omitempty"`    // 0: the node's default
	Chain           bool   `json:"chain,omitempty"`            // partial-mesh bootstrap
	Outage          int    `json:"outage,omitempty"`
	// Group is the consumer group's strategy (Parts.Group), "" for no
	// group; Lease the nodes' lease (-lease), set with it.
	Group   string `json:"group,omitempty"`
	Lease   string `json:"lease,omitempty"`
	Hostile bool   `json:"hostile,omitempty"` // a hostile node runs (HostileReport)
	// Doomed is how many of the workload's first ops are published
	// doomed (Parts.Retention), 0 without retention.
	Doomed int `json:"doomed,omitempty"`
}

// drawSetup draws a schedule's setup. The draws are the same whatever the
// parts (a part switched off ignores its draw), so switching one part off
// leaves the others' draws alone. With cover (the CI run), every optional
// part is on in every schedule but the chain, which is on in schedule 0.
func drawSetup(seed uint64, index int, p Parts, cover bool) Setup {
	rng := rand.New(rand.NewPCG(seed, 0x5e70b))
	slow, small, limit, chain := rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(3) == 0
	hi := []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}[rng.IntN(4)]
	queue, buffer := 4+rng.IntN(61), 16+rng.IntN(241)
	if cover {
		slow, small, limit, chain = true, true, true, index == 0
	}
	s := Setup{Ephemeral: p.Ephemeral, OutOfBand: p.OutOfBand, Reuse: p.Reuse, Retry: p.Retry, Outage: p.Outage}
	if p.SlowSubscriber && slow {
		s.RecordDelay = Delay{300 * time.Microsecond, hi}.String()
	}
	if p.SlowSubscriber && small {
		s.SubscriberQueue = queue
	}
	if p.Limits && limit {
		s.CausalBuffer = buffer
	}
	s.Chain = p.PartialMesh && chain
	if p.Group {
		s.Group, s.Lease = drawGroup(seed)
	}
	s.Hostile = p.Hostile
	if s.Outage > 0 { // the outage alone
		s = Setup{Outage: p.Outage, CausalBuffer: s.CausalBuffer}
	}
	return s
}

// expect is what a schedule's faults and setup explain: counters and log
// lines that are not anomalies there.
func expect(setup Setup, faults []Fault) Expect {
	// A redial that finds its peer down, and a DAG walk cut short by the
	// node's own shutdown, are no faults.
	// Nodes stopped together at the end cannot confirm a hand-off to each
	// other.
	// A node that starts with no DAG heads takes the first heads it hears
	// as its own before it has merged them (go-ds-crdt v0.6.8, crdt.go's
	// "if we have no heads" shortcut); a commit in that window links a
	// block not yet merged and go-ds-crdt warns "bug: created a block to
	// unknown children". The head is merged all the same by the walk its
	// broadcast started (seed 6045: node-3's first commit, nothing missing).
	e := Expect{Logs: []string{"bootstrap peer unreachable", "context canceled", "no connected peer confirmed", "no connected peer to hand",
		"created a block to unknown children"}}
	disrupt := slices.ContainsFunc(faults, func(f Fault) bool { return f.Kind != Slow })
	if setup.Ephemeral > 0 {
		// An out-of-band cause may name a signal of an ephemeral node
		// killed before anyone had it: its effects go without it.
		// So may a dependency: a signal of a killed ephemeral node that
		// another ephemeral node delivered before publishing its own.
		e.Logs = append(e.Logs, "signals wait for causes", "delivered a signal without its cause",
			"delivered a signal without a dependency", "delivered a signal after later ones of its origin")
		if !slices.Contains(e.Counters, "missing_cause") {
			e.Counters = append(e.Counters, "missing_cause")
		}
	}
	if disrupt || setup.Outage > 0 {
		// A cause on the far side of a cut, or on a killed or paused node,
		// may be missing past the cause timeout.
		e.Counters = append(e.Counters, "missing_cause")
		e.Logs = append(e.Logs, "signals wait for causes", "sync before ack",
			// a DAG fetch across a cut times out; the store's repair
			// (package crdt, repairLoop) merges the block later
			"GetDeltas did not include all children", "error getting delta", "marking datastore as dirty",
			"being closed marked as dirty", "error getting node for reprocessing",
			// so does a walk cut short by a kill -9 or a stop, after the restart
			"merging blocks a walk left unmerged",
			// a clean restart across a cut: a peer it is still connected
			// to cannot acknowledge its group member's leave (the group
			// rule checks what that costs)
			"did not acknowledge this node's consumer group members' leave",
			// a cut, a kill or a pause can leave GossipSub without a
			// connected peer's subscriptions or stream, or bitswap
			// without the peer: the relinker connects to it again (the
			// rules check that nothing is lost meanwhile)
			"stopped sending to a connected peer", "could not connect again to a relinked peer")
	}
	if setup.CausalBuffer > 0 {
		e.Counters = append(e.Counters, "causal_buffer_full")
	}
	if setup.Hostile {
		// Its flood waits for predecessors that never come (reported
		// after cause_timeout) and fills its origin's share of the
		// causal buffer. Its log lines are excused one by one, only
		// when they name it (checker.hostileExcused).
		for _, r := range []string{"missing_cause", "causal_buffer_full"} {
			if !slices.Contains(e.Counters, r) {
				e.Counters = append(e.Counters, r)
			}
		}
	}
	return e
}

func (s Setup) String() string {
	out := fmt.Sprintf("%d ephemeral nodes", s.Ephemeral)
	if s.RecordDelay != "" {
		out += ", slow handler " + s.RecordDelay
	}
	if s.SubscriberQueue > 0 {
		out += fmt.Sprintf(", subscriber queue %d", s.SubscriberQueue)
	}
	if s.CausalBuffer > 0 {
		out += fmt.Sprintf(", causal buffer %d", s.CausalBuffer)
	}
	if s.Chain {
		out += ", chain bootstrap"
	}
	if s.Hostile {
		out += ", a hostile node"
	}
	if s.Outage > 0 {
		out += fmt.Sprintf(", outage of %d signals", s.Outage)
	}
	if s.Group != "" {
		out += fmt.Sprintf(", group %s lease %s", s.Group, s.Lease)
	}
	if s.Doomed > 0 {
		out += fmt.Sprintf(", retention (the first %d ops doomed)", s.Doomed)
	}
	return out
}
