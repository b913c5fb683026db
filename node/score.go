package node

import (
	"math"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// GossipSub peer scoring. A peer's score falls when it hands this node a
// message that no honest peer could pass on: a frame whose signals have
// more than one origin, or a signal whose signature does not verify (an
// undecodable message costs nothing: messages carry no author, and a relay
// of another version may pass on what this one cannot decode). Each such
// message adds 1 to the
// peer's penalty count, which decays by 0.9 a second; the score is -100
// times the squared count (GossipSub's application-specific score, P5).
// GossipSub's own count of rejected messages (P4) is off: it also charges a
// peer for handing back a node's own messages after the node restarted
// (GossipSub's "self originated message"), which honest neighbours do.
// Messages refused by policy (an origin outside Config.Allow, a head
// announcement of a non-member, one past its rate) are ignored, not
// penalised: the peer that relays them may just have another allow list.
// Repeated protocol misbehaviour counts too (P7, behaviour penalty:
// unanswered IWANTs, GRAFTs during a backoff; the first 6 are free, since
// a peer that reconnects after a cut may GRAFT early in good faith).
// Time in mesh, delivery counts and IP colocation do not count: a slow or
// quiet peer keeps 0, and edge peers behind one NAT share an address.
//
// One penalised message (-100) is past the graylist threshold (-80):
// GossipSub then ignores every RPC of that peer until the count decays
// (about 2 s for one message, 30 s for ten, 50 s for a hundred). Below -10
// nothing is gossiped to it, below -50 nothing published to it; peer
// exchange is taken only from peers at 0 or above.
const (
	penaltyWeight      = -100
	penaltyDecay       = 0.9 // a second
	scoreDecayInterval = time.Second
	scoreGossip        = -10
	scorePublish       = -50
	scoreGraylist      = -80
	maxPenalised       = 4096 // peers whose penalty is remembered; past it the oldest counts are dropped
)

// penalties counts, per peer, the messages it handed over that no honest
// peer would, decayed by penaltyDecay a second.
type penalties struct {
	mu sync.Mutex
	m  map[peer.ID]*penalty
}

type penalty struct {
	count float64
	at    time.Time
}

func (ps *penalties) decayed(p *penalty, now time.Time) float64 {
	return p.count * math.Pow(penaltyDecay, now.Sub(p.at).Seconds())
}

// add counts one message against p.
func (ps *penalties) add(p peer.ID) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := time.Now()
	if ps.m == nil {
		ps.m = map[peer.ID]*penalty{}
	}
	e := ps.m[p]
	if e == nil {
		if len(ps.m) >= maxPenalised {
			for id, o := range ps.m { // drop what has decayed away
				if ps.decayed(o, now) < 0.01 {
					delete(ps.m, id)
				}
			}
			if len(ps.m) >= maxPenalised {
				clear(ps.m)
			}
		}
		e = &penalty{}
		ps.m[p] = e
	}
	e.count = ps.decayed(e, now) + 1
	e.at = now
}

// score is p's application-specific score.
func (ps *penalties) score(p peer.ID) float64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e := ps.m[p]
	if e == nil {
		return 0
	}
	c := ps.decayed(e, time.Now())
	if c < 0.01 {
		delete(ps.m, p)
		return 0
	}
	return penaltyWeight * c * c
}

// peerScore returns GossipSub's score parameters for the given topics.
func (n *Node) peerScore(topics ...string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	p := &pubsub.PeerScoreParams{
		SkipAtomicValidation:      true,
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:          n.penalties.score,
		AppSpecificWeight:         1,
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     0.9,
		DecayInterval:             scoreDecayInterval,
		DecayToZero:               0.01,
		RetainScore:               time.Minute,
	}
	for _, t := range topics {
		p.Topics[t] = &pubsub.TopicScoreParams{
			SkipAtomicValidation: true,
			TopicWeight:          1,
			TimeInMeshQuantum:    time.Second, // P1 is off (weight 0), but GossipSub divides by it
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
