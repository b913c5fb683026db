package node

import pubsub "github.com/libp2p/go-libp2p-pubsub"

// GossipSubParams are the GossipSub parameters a node with these Params
// runs: GossipSub's defaults with the mesh degrees scaled to
// Params.GossipDegree (see there). Exported for baselines that want a
// node's own gossip settings (the bench's gossipsub-tuned).
func GossipSubParams(p Params) pubsub.GossipSubParams {
	d := p.withDefaults().GossipDegree
	gp := pubsub.DefaultGossipSubParams()
	gp.D = d
	gp.Dlo = max(1, d*5/6)
	gp.Dhi = max(gp.Dlo, 2*d)
	gp.Dscore = min(gp.Dhi, 2*d/3)
	gp.Dout = max(0, min(d/3, d/2-1, gp.Dlo-1))
	gp.Dlazy = d
	return gp
}
