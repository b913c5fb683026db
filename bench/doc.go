// Package bench is signalmesh's benchmark harness: it measures how fast a
// mesh converges and what it costs, next to baselines run in the same run
// on the same loopback hosts and payloads: raw go-libp2p-pubsub GossipSub
// (what you get with no journal), raw go-ds-crdt with unbatched and batched
// Puts (the same DAG service and broadcaster), and NATS core through an
// embedded nats-server (the brokered reference).
//
// Run takes a Spec (which scenarios, how many peers, signals, rate, seed,
// and whether each peer runs in an OS process of its own) and returns a
// Result: every figure with its unit and system, curves to plot, and every
// signal a subscriber missed, by id. Result.Summary prints the table with
// each baseline as a ratio to signalmesh, WriteJSON writes the run and Plot
// draws PNG and SVG charts. The command `signalmesh bench` does all of it.
//
// Peers are agents: in this process, or (Spec.Processes) children started
// from this same executable, which must call AgentMain when IsAgent is true
// before anything else, as cmd/signalmesh and this package's tests do.
//
// Scenarios build fresh peers each time and measure from the outside:
// publish times are taken at the publisher, arrival times at each
// subscriber, on one machine's clock. Convergence is timed by polling cheap
// arrival counts and then verifying journal digests, so that the polling
// does not slow down what it waits for. Nothing here asserts a speed; the
// tests check that reports are produced and complete.
package bench
