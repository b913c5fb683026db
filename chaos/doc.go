// Package chaos is signalmesh's fault-injection harness: it runs `signalmesh
// node` as separate OS processes, injects faults from a seeded schedule
// under a publishing workload, heals, and checks from what the replicas and
// subscribers recorded that nothing was lost.
//
// # The network
//
// As root with iproute2 ("ip"), each node runs in a network namespace of
// its own, joined to the others by a veth pair on a bridge; a partition is
// a pair of blackhole routes per cut link, so packets really stop. A slow
// link is a qdisc on the node's veth: netem delay and loss where the kernel
// has sch_netem, else a tbf rate limit. Elsewhere the nodes run on
// 127.0.0.1 and a partition is each node's connection gater (the daemon's
// -fault-api): connections are refused and closed, but packets are not cut,
// and there are no slow links. The report says which was used.
//
// # The NAT topology
//
// With Spec.Topology "nat" (`signalmesh chaos -topology nat`; root, ip
// and iptables, no fallback) the namespaces form the network edge
// devices live on (layoutNAT): the first node (the first two from 7
// nodes) is public, on a public bridge, and offers circuit relay service
// (the daemon's -relay); the others, the edges, sit on private networks,
// each behind a NAT router namespace (netns.Router: MASQUERADE, and a
// firewall that drops unsolicited inbound packets, as home routers do):
// two routers that keep a host's port for every destination, so hole
// punching (DCUtR) can make the links across them direct, and from four
// edges a third with one edge, symmetric (--random-fully), whose links
// stay relayed. Five nodes: 0 public; 1 and 2 behind r0; 3 behind r1; 4
// behind r2. The edges bootstrap to the public nodes alone, keep a
// reservation on each (-relays), and find each other by discovery
// (announcements every second). Ephemeral and hostile nodes run beside
// a node, in its namespace, and bootstrap to it and to a node they can
// dial (a public one for an edge's). A second link per node namespace,
// to the harness, carries only the HTTP API (its firewall takes in only
// connections to the API ports and lets out only their answers), so
// slow links shape only the node's network link, not the harness's
// requests. There is no chain bootstrap (Setup.Chain is off).
//
// A cut "a cannot send to b" drops, in b's namespace, every packet that
// comes in marked as a's: each node namespace sets a DSCP value of its
// own on what it sends (the NATs leave it alone). So it cuts every path
// from a to b: on a LAN, through the NATs to or from a public node, and
// a hole-punched one between two NATs, whoever opened it. A circuit
// relayed by a public node r is r's own traffic, and is cut when r is
// cut from a or from b, which every cut the harness draws does (halves,
// isolate, one-way, flap: the relay is on one side), except a bridge cut
// whose bridge node is r: the two sides then reach each other through r,
// relayed, which is what a bridge cut is. A process fault of a public
// node (kill, pause, restart, slow) cuts every edge that reaches another
// only through it (behind the symmetric NAT, or before a hole punch), so
// the group rule counts it, and its process starts, as a failover window
// for every node, as it does a cut. After the probes the harness reads
// every edge's links (Status.Links) and the result reports each pair of
// edges direct, relayed or not connected (Result.Links).
//
// # A schedule
//
// Plan draws, from a seed, faults one after another, each 1-3 s, some
// overlapping (two process faults never on one node at once): two halves;
// one node isolated; a bridge cut (two sides that reach each other only
// through one node); flapping halves; a one-way cut; kill -9 and restart
// on the same data directory; a clean restart (SIGTERM); SIGSTOP then
// SIGCONT, also for 6-8 s (longer than the client's 5 s timeout); a slow
// link; and a kill -9 while the mesh settles after the heal. With
// Spec.Cover (the CI run) Deal gives each kind to one schedule instead.
//
// The workload publishes at a steady rate to random nodes over the HTTP
// API, at every consistency level (Weak, Eventual, Quorum(1..2)). Its
// parts (Parts) are switchable, and Setup records what the seed drew for
// a schedule: ephemeral nodes (in memory, a fresh identity: new origins)
// that join beside a node, publish 1-3 signals and leave by SIGTERM or
// kill -9 after the answers, never to return; causes taken half from
// other nodes' publishes (out of band) and half from the publishing
// node's deliveries, biased to the most recent; a slow recording handler
// (the daemon's -record-delay) and a small subscriber queue; a causal
// buffer scaled down to 16-256; 2 % of the ops reusing an id under another
// source on another node; a retry, with the same (source, id), on another
// node of each publish whose outcome is unknown; a chain bootstrap
// (multi-hop gossip); and, as an option, a long outage (one node cut off
// while Parts.Outage signals are published). Each op takes the same draws
// whatever the timing. Every node runs a persistent subscription that
// records, in order, each signal it delivers with its origin, causal
// metadata and a digest of its data (Recorder, the daemon's -record).
//
// # The consumer group
//
// With Parts.Group (on by default; -parts group) every node also runs a
// member of one consumer group, "chaos", beside that subscription (the
// daemon's -record-group-file: a second record, in the same format, of
// this node's share; -record stays a plain subscription, which every
// other rule reads). The seed draws the group's strategy (hash:subject
// six times in ten, else balanced or local-first) and a lease of 1, 1.5
// or 2 s (the nodes' -lease), so that failovers happen within a
// schedule; the workload's signals carry one of 12 subjects. Record
// lines carry the time they were written (Entry.T). The group rule
// (Rules, "group") checks that every signal journaled on every replica is
// handled by some member (the records of killed processes count up to
// their kill), and more than once only inside a failover window: a kill
// -9, pause, settle kill or slow link of node k from its start to its end
// plus the lease plus 3 s, for signals node k handled; a cut from its
// start to its heal plus the lease plus 3 s, for any node (both sides
// handle during a cut, and what the far side published is handled again
// after the heal); a process start of node k for the lease plus 3 s after
// it, for signals node k handled (a member that joins shares until the
// others hear of it). A duplicate is inside a window when the signal's
// first publish or one of its handlings is. A clean restart opens no
// window but its start's: the member hands off its final mark. With
// hash:subject, the signals published and handled outside every window
// (a clean restart's bounds one too) must go, per subject and stretch
// between windows, to one member, each origin's in sequence; in a full
// schedule the windows often cover it all (Verdict.Group.Ordered says how
// many were checked). The duplicates inside windows are counted
// (Verdict.Group), not anomalies. Settle also waits until a member has
// handled every journaled signal.
//
// # Retention
//
// With Parts.Retention (on by default; -parts retention) the nodes keep
// every signal for an hour from its time attribute and prune every
// 500 ms (the config file's "retention" and params.prune), and the
// workload's first half is doomed: its signals (the ephemeral nodes' too)
// carry a time attribute that puts them 1-5 s from the end of their
// retention (Op.Expires), so they, and their journal blocks, leave the
// disk while the faults happen (bottom-up: no retained signal lies below
// them), and a node that was paused, cut off or killed comes back to a
// history whose bottom nobody holds any more. The rules are restricted to
// the retained signals: a doomed signal need not be in any journal or
// record (each is one sequence of its origin that may be missing, like a
// retry alias), and need not precede, as a cause or a dependency, a
// signal a node delivered after the doomed one had expired; every other
// rule holds for it as for any (never delivered twice, never forged,
// never out of its origin's order). The retention rule ("retention") says
// every node pruned: the report gives each node's pruned entries and
// blocks.
//
// # The hostile node
//
// With Parts.Hostile (on by default, and in CI's parts) a hostile node
// (`signalmesh hostile`, package internal/hostile) runs beside one node,
// drawn from the seed, from the workload's start to its end: several
// libp2p identities in one process, with a GossipSub set up as a node's,
// on the mesh's topics. At a modest rate it gossips signals in honest
// nodes' names at their next sequence, signed by its own key, unsigned, or
// in a frame after a signal of its own (the forgers take turns: a forged
// message graylists its sender for a while); floods signals of its own,
// signed, whose sequences skip numbers (2,000, 200 short); announces
// bogus journal heads (unsealed, a CID that cannot name a block, blocks
// that exist nowhere); and, through a go-ds-crdt replica of the journal
// (same namespace and topic), writes blocks with an entry in an honest
// origin's name at its next place signed by its key, a signal of its own
// at an honest origin's place, another value for an honest entry, a
// tombstone of one. It reports what it sent (HostileReport, kept in the
// Result). Its flood is legitimately delivered after dep_wait gives up
// the missing predecessors, and adopted into the journals: its own
// signals are held to no honest rule (a dependency on one need not be
// delivered first either). The hostile rule says a signal of its source in
// another's name is never journaled or delivered, that each attack kind it
// sent was counted by an honest node (rejected_total by reason, or the
// flood's dropped_total), and that it ran; WARN lines its attacks cause
// are excused only when they name it (its peer ids, signal ids, blocks).
//
// # The checker
//
// After the last fault the harness heals everything, waits until every
// journal has the same digest and every record holds the journal,
// publishes one probe per node (acknowledged and delivered everywhere
// within 10 s), waits again (up to 15 s) until the journals hold the
// probes, reads the journals with their content, stops the nodes,
// reads their records, drop counters (scraped from /metrics before each
// process ends) and WARN/ERROR log lines, and calls Check. Everything is
// keyed by (source, id); causal metadata is read in either format the
// core stamps (ParseMeta: meshclock, or meshcausal with dependencies by
// peer ref). The rules are listed in Rules: lost, quorum, phantom,
// divergent, content, origin, gap, undelivered, unjournaled, duplicate,
// fifo, causal (happens-before: the origin's previous sequence, the
// cause, the metadata's dependencies), unavailable, metric, log and
// hostile; the harness adds crash, probe, quiescence and stop (a mesh
// that does not settle is reported with the reasons it gave over the wait
// and each node's journal, links and drops at its end). On a
// failure, Explain gives the seed and the smallest history that shows it:
// the publishes of the signals involved and their causes, the faults
// around them, and the record lines that name them. A result holds its spec and setup: the
// command's -replay runs it again.
//
// # Cleanup
//
// Run removes every process, namespace, link and directory it made before
// it returns, also when its context ends (SIGINT in `signalmesh chaos`).
// Node processes die with the harness even when it is killed (they carry a
// parent-death signal); namespaces and links of a killed run are removed by
// the next run, or by CleanStale (`signalmesh chaos -cleanup`).
package chaos
