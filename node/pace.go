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
// (an announcement every Params.Discover; a renewal every Lease/3 to
// 11/24 Lease, the registrar's tick being Lease/8). A joining peer whose
// own fresh message on the topic reached this node within 1.5 Discover,
// or Lease/2, was in touch with the mesh that recently: this node's
// entries stay live in its view until they expire (a lease after this
// node's last renewal that reached it, which a cut shorter than the
// window leaves in force), the journal's heads go to it on a stream of
// their own when it joins, and what changed meanwhile (new members,
// leaves, marks) comes with the next round. So a cut shorter than the
// window, or a connection the manager trimmed and a dial restored, costs
// no message from every node to every node (they took a fifth of a
// 32-peer heal's time, on two cores). A newcomer, or a peer back after a
// longer cut, sent nothing fresh here lately and is answered as before.
// A node that restarted within the window asks: its lease messages say
// Hello until it has heard who is live, and when it answers the join of
// a peer it has not heard since it started.
