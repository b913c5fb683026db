package node

import pubsub "github.com/libp2p/go-libp2p-pubsub"

// GossipSubParams are the GossipSub parameters a node with these Params
// runs: GossipSub's defaults with the mesh degrees scaled to
// Params.GossipDegree (see there), and no gossip repair: a node advertises
// no message IDs (IHAVE) to peers outside its mesh (HistoryGossip 0,
// Dlazy 1).
//
// GossipSub's repair is for a mesh with nothing behind it. Here every
// topic has its own: the journal path delivers every signal gossip lost
// (within a journal delta, 50 ms by default, where IHAVE waits for a
// heartbeat, 1 s), heads are announced again every Params.Rebroadcast,
// addresses and leases every round, and a Quorum publisher asks again for
// acks it lacks. And after a partition heals the repair does harm: each
// side's frames of the last three heartbeats, asked for by the other
// side's peers, are forwarded through that side's whole mesh, beside the
// journal path that brings them too. At 32 peers, 1,000 signals a side,
// the heal sent 1.5 MiB of frames a peer that way (3.1 MiB in all; 0.9
// MiB at 16 peers); without it 1.3 MiB in all (BENCHMARKS.md). Exported
// for baselines that want a node's own gossip settings (the bench's
// gossipsub-tuned).
func GossipSubParams(p Params) pubsub.GossipSubParams {
	d := p.withDefaults().GossipDegree
	gp := pubsub.DefaultGossipSubParams()
	gp.D = d
	gp.Dlo = max(1, d*5/6)
	gp.Dhi = max(gp.Dlo, 2*d)
	gp.Dscore = min(gp.Dhi, 2*d/3)
	gp.Dout = max(0, min(d/3, d/2-1, gp.Dlo-1))
	gp.Dlazy = 1
	gp.HistoryGossip = 0
	return gp
}
