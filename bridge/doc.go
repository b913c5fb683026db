// Package bridge carries signals between clusters, and between a mesh and
// anything that speaks HTTP, with the CloudEvents HTTP binding.
//
// An Ingress is an http.Handler that publishes the CloudEvents posted to it
// (structured, binary or batch mode) into a node, with a consistency per
// route, after checking a bearer token or an HMAC signature (Sign, Verify).
// It refuses what it cannot take with a 4xx and a reason, and publishes
// nothing then; publishing is idempotent by signal id, so a retried
// delivery never publishes twice.
//
// An Egress delivers the signals matching each Destination's patterns to
// another cluster's ingress, any CloudEvents HTTP receiver, or a webhook
// (signed over "<unix seconds>.<body>"). Delivery is at least once and
// survives restarts: durable subscriptions feed a durable outbox per
// destination, a sender retries with exponential backoff and jitter behind
// a circuit breaker, and after the last attempt publishes a DeadLetterType
// signal that says what failed and why.
//
// Clusters bridged both ways do not loop: a signal carries the cluster it
// was first published in (ExtCluster) and the bridges it crossed (ExtHops);
// an egress never sends a signal back to its origin cluster, and an
// ingress drops signals of its own cluster and those over MaxHops.
//
// For state that several clusters update concurrently, a Latest view keeps
// the latest signal per subject as a Resolver decides: LastWriterWins,
// VectorDominance with a merge function, or a ResolverFunc of your own.
package bridge
