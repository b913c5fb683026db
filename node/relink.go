package node

import (
	"context"
	"slices"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// GossipSub can stop sending to a peer that stays connected, in two ways,
// both when the connection that carries its streams closes while another
// connection to the peer stays open (a relayed connection giving way to a
// direct one; a cut healed before the old connection's end was noticed):
//
//   - It opens a new stream on the other connection after a backoff;
//     after the fourth time within ten minutes (MaxBackoffAttempts), or
//     when opening the stream fails, it gives up on the peer for as long
//     as the connection lasts.
//   - It forgets the peer's subscriptions when its own stream dies. If the
//     peer's announcement of them on its new stream came first, the
//     forgetting wins, and the peer never announces them again: the peer
//     is outside the topic for good (a healed cut, under load: a probe
//     never reached the other side in TestGroupBacklogJudgesEachCopy).
//
// Either way nothing the node publishes reaches the peer any more
// (gossip, journal heads and their re-announcements, acks), while the
// peer still sends.
//
// Bitswap, which fetches the journal's blocks, can lose a connected peer
// the same way: a send that fails on the closing connection marks the
// peer unresponsive, and only a message from it marks it responsive
// again, which never comes when neither side wants anything the other
// will be asked for. The peer's journal heads then cannot be fetched:
// under load, TestRelayedLinkGivesWayToDirect saw a signal that was lost
// in gossip (published as the connections changed) never arrive by the
// journal either, its head block wanted from nobody.
//
// The relinker repairs all three: a connected peer whose outbound
// GossipSub stream closed and was not opened again relinkAfter later, that
// left the signals topic while connected and is outside it relinkAfter
// later, or whose journal head has not come crdt.Params.SlowFetch (5 s)
// plus relinkAfter after its fetch began, has its connections closed, and is dialled again relinkPause after that
// (so that both GossipSubs see it gone, not "dead but still connected"):
// a new connection starts both afresh. A node that leaves the mesh on
// purpose leaves the topics last in Close and closes its host right after,
// so it is no longer connected by then. Each peer is relinked at most once
// per relinkEvery.
const (
	relinkAfter = 2 * time.Second
	relinkPause = 500 * time.Millisecond
	relinkEvery = 30 * time.Second
	maxRelink   = 4096 // peers the relinker remembers per kind; past it, it forgets them all
)

// writers holds, per peer, when GossipSub's outbound stream to it closed
// (until it opens another; the tracer writes it from GossipSub's event
// loop), when it left the signals topic while connected (until it joins
// again), and when each peer was last relinked.
type writers struct {
	mu    sync.Mutex
	down  map[peer.ID]time.Time
	left  map[peer.ID]time.Time
	fetch map[peer.ID]time.Time // announcers whose head fetch is slow
	last  map[peer.ID]time.Time
}

// markAt records p in m at at.
func markAt(m *map[peer.ID]time.Time, p peer.ID, at time.Time) {
	if *m == nil || len(*m) >= maxRelink {
		*m = map[peer.ID]time.Time{}
	}
	(*m)[p] = at
}

func (w *writers) closed(p peer.ID, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	markAt(&w.down, p, at)
}

func (w *writers) opened(p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.down, p)
}

func (w *writers) leave(p peer.ID, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	markAt(&w.left, p, at)
}

func (w *writers) join(p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.left, p)
}

// slowFetch is crdt.Params.OnSlowFetch: an announcer's head fetch is
// slow, or it came after all.
func (w *writers) slowFetch(p peer.ID, slow bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slow {
		markAt(&w.fetch, p, time.Now())
	} else {
		delete(w.fetch, p)
	}
}

// due returns the peers whose stream has been down, that have been
// outside the topic, or whose head fetch has been slow, at least after (and forgets them; left tells which
// of the returned peers only left the topic), leaving out those relinked
// within every.
func (w *writers) due(now time.Time, after, every time.Duration) (out []peer.ID, left map[peer.ID]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	take := func(m map[peer.ID]time.Time, isLeft bool) {
		for p, at := range m {
			if now.Sub(at) < after {
				continue
			}
			delete(m, p)
			if t, ok := w.last[p]; ok && now.Sub(t) < every {
				continue
			}
			if isLeft {
				if left == nil {
					left = map[peer.ID]bool{}
				}
				left[p] = true
			}
			markAt(&w.last, p, now)
			out = append(out, p)
		}
	}
	take(w.down, false)
	take(w.left, true)
	take(w.fetch, false)
	return out, left
}

// watchTopicLeaves records the peers that leave the signals topic while
// connected, and forgets those that join again. It stops with the node.
func (n *Node) watchTopicLeaves(h *pubsub.TopicEventHandler) {
	defer n.wg.Done()
	for {
		ev, err := h.NextPeerEvent(n.ctx)
		if err != nil {
			return
		}
		switch {
		case ev.Type == pubsub.PeerJoin:
			n.writers.join(ev.Peer)
		case n.host.Network().Connectedness(ev.Peer) == network.Connected:
			n.writers.leave(ev.Peer, time.Now())
		}
	}
}

// relinker closes and dials again the connected peers GossipSub stopped
// sending to (see relinkAfter). It stops with the node.
func (n *Node) relinker() {
	defer n.wg.Done()
	t := time.NewTicker(relinkAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		due, left := n.writers.due(time.Now(), relinkAfter, relinkEvery)
		for _, p := range due {
			if n.host.Network().Connectedness(p) != network.Connected {
				continue // gone: a new connection starts afresh
			}
			if left[p] && slices.Contains(n.topic.ListPeers(), p) {
				continue
			}
			ai := peer.AddrInfo{ID: p, Addrs: n.host.Peerstore().Addrs(p)}
			n.log.Warn("node: GossipSub stopped sending to a connected peer; connecting to it again", "peer", p, "left_topic", left[p])
			n.m.relinked.Add(1)
			_ = n.host.Network().ClosePeer(p)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(relinkPause):
			}
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			ClearDialBackoff(n.host, p)
			if err := n.host.Connect(ctx, ai); err != nil && n.ctx.Err() == nil {
				n.log.Debug("node: connect again", "peer", p, "err", err)
			}
			cancel()
		}
	}
}
