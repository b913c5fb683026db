package node

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// GossipSub peer scoring. A peer's score falls with every message of it
// that a validator rejects (GossipSub's P4, "invalid message deliveries",
// on each of the mesh's topics) and with repeated protocol misbehaviour
// (P7, behaviour penalty: IWANTs it did not answer, GRAFTs during a
// backoff; the first 6 are free, since a peer that reconnects after a cut
// may GRAFT early in good faith); nothing else counts. Time
// in mesh, first and mesh deliveries (P1-P3) are off, so that a peer that
// is merely slow or quiet keeps a score of 0, and so is IP colocation
// (P6): edge peers behind one NAT share an address.
//
// One rejected message costs -100 (weight -100 times the squared count),
// which is past the graylist threshold (-80): GossipSub then ignores every
// RPC of that peer until the count decays (x0.9 a second: about 2 s for
// one message, about 30 s for ten, 50 s for a hundred). Below -10 nothing
// is gossiped to it, below -50 nothing published to it; peer exchange is
// taken only from peers at 0 or above.
const (
	scoreInvalidWeight = -100
	scoreInvalidDecay  = 0.9
	scoreDecayInterval = time.Second
	scoreGossip        = -10
	scorePublish       = -50
	scoreGraylist      = -80
)

// peerScore returns GossipSub's score parameters for the given topics.
func peerScore(topics ...string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	p := &pubsub.PeerScoreParams{
		SkipAtomicValidation:      true,
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:          func(peer.ID) float64 { return 0 },
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     0.9,
		DecayInterval:             scoreDecayInterval,
		DecayToZero:               0.01,
		RetainScore:               time.Minute,
	}
	for _, t := range topics {
		p.Topics[t] = &pubsub.TopicScoreParams{
			SkipAtomicValidation:           true,
			TopicWeight:                    1,
			TimeInMeshQuantum:              time.Second, // P1 is off (weight 0), but GossipSub divides by it
			InvalidMessageDeliveriesWeight: scoreInvalidWeight,
			InvalidMessageDeliveriesDecay:  scoreInvalidDecay,
		}
	}
	th := &pubsub.PeerScoreThresholds{
		SkipAtomicValidation: true,
		GossipThreshold:      scoreGossip,
		PublishThreshold:     scorePublish,
		GraylistThreshold:    scoreGraylist,
	}
	return p, th
}
