package node

import pubsub "github.com/libp2p/go-libp2p-pubsub"

// GossipSubParams are the GossipSub parameters a node with these Params
// runs: GossipSub's defaults with the mesh degrees scaled to
// Params.GossipDegree (see there), and gossip (IHAVE) sent each heartbeat
// to a quarter of the topic's peers outside the mesh, at least one (Dlazy
// 1; GossipSub's default is at least 6). With a smaller mesh more peers
// are outside it, and after a partition heals GossipSub's repair would
// resend each side's last frames to every one of them beside the journal
// path: at 8 peers, 10,000 signals a side, 31 MiB sent a peer at Dlazy 4
// against 16.6 at 1 (BENCHMARKS.md). Exported for baselines that want a
// node's own gossip settings (the bench's gossipsub-tuned).
func GossipSubParams(p Params) pubsub.GossipSubParams {
	d := p.withDefaults().GossipDegree
	gp := pubsub.DefaultGossipSubParams()
	gp.D = d
	gp.Dlo = max(1, d*5/6)
	gp.Dhi = max(gp.Dlo, 2*d)
	gp.Dscore = min(gp.Dhi, 2*d/3)
	gp.Dout = max(0, min(d/3, d/2-1, gp.Dlo-1))
	gp.Dlazy = 1
	return gp
}
