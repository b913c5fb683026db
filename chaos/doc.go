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
// # A schedule
//
// Plan draws, from a seed, faults one after another, each 1-3 s with a
// quiet gap between: two halves; one node isolated; a bridge cut (two sides
// that reach each other only through one node); flapping halves; kill -9
// and restart on the same data directory; SIGSTOP then SIGCONT; a slow
// link. Meanwhile a workload publishes at a steady rate to random nodes over
// the HTTP API, at every consistency level (Weak, Eventual, Quorum(1..2)),
// a third of the journaled ones the effect of a signal the publishing node
// had delivered (a cause->effect chain). Every node runs a persistent
// subscription that records, in order, each signal it delivers (Recorder,
// the daemon's -record).
//
// # The checker
//
// After the last fault the harness heals everything, waits until every
// journal has the same digest and every record holds the journal, stops the
// nodes and calls Check, which verifies: no signal whose publish was
// acknowledged (or whose quorum wait timed out: it is journaled) is missing
// from any journal; all journals are equal, in the same replay order, and
// hold nothing that was not published (nor a refused publish, nor a weak
// signal); each node's subscription received every journaled signal, once,
// or a second time only right after a kill -9 of its process (persistent
// subscriptions are at least once across a crash: the Recorder, an
// idempotent consumer, marks the second copy); no node delivered an effect
// before its cause; every acknowledged Quorum(k) publish is on at least k+1
// replicas (after the heal they must be on all, which is stronger). On a
// failure, Explain gives the seed and the smallest history that shows it:
// the publishes of the signals involved and their causes, the faults around
// them, and the record lines that name them.
//
// # Cleanup
//
// Run removes every process, namespace, link and directory it made before
// it returns, also when its context ends (SIGINT in `signalmesh chaos`).
// Node processes die with the harness even when it is killed (they carry a
// parent-death signal); namespaces and links of a killed run are removed by
// the next run, or by CleanStale (`signalmesh chaos -cleanup`).
package chaos
