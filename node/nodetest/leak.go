// Package nodetest holds helpers for tests of code that runs signalmesh
// nodes.
package nodetest

import "go.uber.org/goleak"

// IgnoredGoroutines are goroutines that libp2p and its dependencies start
// once per process and never stop; goleak checks must ignore them, since no
// node owns them:
//
//	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
func IgnoredGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("github.com/ipfs/boxo/bitswap/network/bsnet.(*impl).Start"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
		// libp2p builds a default connection manager in a package-level var.
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/connmgr.(*decayer).process"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/connmgr.(*BasicConnMgr).background"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/host/resource-manager.(*resourceManager).background"),
		// GossipSub retries a subscription announcement to a peer whose
		// queue was full in a goroutine of its own that sleeps up to 1 s
		// and then ends (also after the PubSub is gone); nothing owns it.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).announceRetry"),
	}
}
