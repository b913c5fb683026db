// Package bench is signalmesh's benchmark harness: it measures how fast a
// mesh converges and what it costs, next to baselines run in the same run
// on the same loopback hosts and payloads: raw go-libp2p-pubsub GossipSub
// (what you get with no journal), once with its default options and once
// with signalmesh's own (gossipsub-tuned), raw go-ds-crdt with batched Puts
// (the same DAG service and broadcaster), and NATS core
// through an embedded nats-server (the brokered reference). Result.Systems
// says what each is and what its payload is.
//
// Run takes a Spec (which scenarios, how many peers, signals, rate, seed,
// and whether each peer runs in an OS process of its own) and returns a
// Result: every figure with its unit and system, curves to plot, and every
// signal a subscriber missed, by id. Each scenario runs Spec.Repeat times
// (default 5) with the systems' order rotated by one each run; a figure is
// the median over the runs, with the smallest and largest run's value.
// Result.Summary prints the table with each baseline's median as a ratio to
// signalmesh's, baseline / signalmesh, and only between equal workloads;
// WriteJSON writes the run and Plot draws PNG and SVG charts, sweeps with
// error bars. The command `signalmesh bench` does all of it.
//
// Peers are agents: in this process, or (Spec.Processes) children started
// from this same executable, which must call AgentMain when IsAgent is true
// before anything else, as cmd/signalmesh and this package's tests do.
//
// Scenarios build fresh peers each time and measure from the outside:
// publish times are taken at the publisher, arrival times at each
// subscriber, on one machine's clock. A signal a subscriber never got
// stays in the latency sample as never arriving, so a percentile that
// falls on one is "not reached"; an empty sample fails the run. Every
// heal, signalmesh's and the go-ds-crdt baselines', is timed by one clock
// (timeHeal): it stops when every replica's put hook has counted the
// target, and the journals' digests or the stores' keys are verified after,
// off the clock. Durable publish is timed until the journal holds every
// signal. Memory is the peak resident size during each system's run.
// Nothing here asserts a speed; the tests check that reports are produced
// and complete, and, with fake systems, that losses, ratios and empty
// samples are reported as they should be.
package bench
