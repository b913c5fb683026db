// Package node is a signalmesh peer: a libp2p host that publishes and
// subscribes to signals with no broker, over two paths.
//
// The fast path gossips each signal over GossipSub (flood publish, message id
// = signal id, a validator that decodes, bounds and checks the origin of every
// message). The durable path writes it to a journal replicated with
// go-ds-crdt: batched into DAG deltas, announced on a short interval and
// whenever a peer joins, fetched over bitswap by any peer that missed the
// gossip. Both paths feed one door: dedup by (origin, sequence), a causal
// buffer, then the subscriptions, so that each subscription sees each signal
// once and never an effect before its cause.
//
// A node keeps working with no peers: it publishes, journals and delivers
// locally, and converges when connections come back.
//
// # Lifecycle
//
//	n, err := node.New(ctx, node.Config{Mesh: "shop", DataDir: "/var/lib/shop"})
//	defer n.Close()
//	sub, _ := n.Subscribe("order.**", handle)
//	_ = n.Publish(ctx, sig)
//
// Close stops every goroutine the node started.
package node
