package node

import (
	"math/rand/v2"
	"time"
)

// Join pacing. A node announces its addresses (peers topic) and renews its
// leases (leases topic) when a peer joins the topic, so that a newcomer
// learns at once who is there. When a partition heals, every peer of one
// side joins every peer of the other: answering each join at once made n
// sealed messages per join, each verified and forwarded by every other
// peer, while the healing connections were still being set up (at 32
// peers on two cores, dials timed out). So the answer to a burst of joins
// comes once, joinQuiet after the first join plus a random wait that grows
// with the peers on the topic (spreading the n answers), and two answers
// are at least joinGap apart; the periodic rounds go on as before.
const (
	joinQuiet     = 100 * time.Millisecond
	joinJitterPer = 10 * time.Millisecond // per peer on the topic, up to joinJitterMax
	joinJitterMax = time.Second
	joinGap       = time.Second
)

// joinPacer schedules the answer to joins; owned by one goroutine.
type joinPacer struct {
	t     *time.Timer
	armed bool
	last  time.Time // the last answer
}

func newJoinPacer() *joinPacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &joinPacer{t: t}
}

// C fires when an answer is due; call answered then.
func (p *joinPacer) C() <-chan time.Time { return p.t.C }

// join notes a join, with peers on the topic.
func (p *joinPacer) join(peers int) {
	if p.armed {
		return
	}
	wait := joinQuiet
	if spread := min(time.Duration(peers)*joinJitterPer, joinJitterMax); spread > 0 {
		wait += rand.N(spread)
	}
	if next := time.Until(p.last.Add(joinGap)); next > wait {
		wait = next
	}
	p.armed = true
	p.t.Reset(wait)
}

// answered records an answer (due or not: a periodic round counts too).
func (p *joinPacer) answered() {
	p.last = time.Now()
	if p.armed {
		p.armed = false
		p.t.Stop()
	}
}

func (p *joinPacer) stop() { p.t.Stop() }

// A join is answered only when the joiner may lack what the answer
// carries. Each node sends its own message on both topics every period
// (Params.Discover, Lease/3); a joining peer whose own message on the
// topic reached this node within the last period and a half was in the
// mesh with it meanwhile, and so has this node's last message too. A
// cut shorter than that, or a connection the manager trimmed and a dial
// restored, is answered by the next round, not by a message from every
// node to every node (a fifth of a 32-peer heal's time, on two cores).
// A newcomer, or a peer back after a longer cut, has sent nothing here
// lately and is answered as before; a node that restarted within the
// window asks (a lease message's Hello) until it has heard who is live.
