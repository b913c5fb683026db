package node

import (
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// inspectRPC is GossipSub's inspector of incoming RPCs. It leaves out of
// an RPC the gossip (IHAVE) on the signals topic from a peer this node has
// been connected to for less than GossipSub's gossip window (HistoryGossip
// heartbeats, 3 s), as long as this node has a mesh on that topic.
//
// Such gossip names what the peer's message cache holds, which after a
// partition heals is mostly its side's last frames, published before the
// two were connected. Asking for them (IWANT) brought every one (a commit
// batch, up to hundreds of KiB) to every peer of the other side, late,
// when the journal path had delivered their signals already: at 32 peers
// that was most of a heal's bytes on GossipSub (BENCHMARKS.md).
//
// What is given up: for those 3 s, GossipSub's repair from that one peer
// of frames this node's mesh dropped. Journaled signals come by the
// journal anyway; a Weak one (no journal) that this node's mesh did not
// bring and that no older peer gossips is lost, as it is when GossipSub's
// repair misses. A node without a mesh on the topic (just started, or a
// leaf a full hub refused) keeps all gossip: it may be its only path.
// Gossip on the other topics (head announcements, leases) is kept.
func (n *Node) inspectRPC(from peer.ID, rpc *pubsub.RPC) error {
	n.leaveYoungGossip(from, rpc, n.gossipWindow)
	return nil
}

// leaveYoungGossip is inspectRPC with the gossip window given.
func (n *Node) leaveYoungGossip(from peer.ID, rpc *pubsub.RPC, window time.Duration) {
	ctl := rpc.GetControl()
	if ctl == nil || len(ctl.Ihave) == 0 {
		return
	}
	young := func() bool { return n.connectedFor(from) < window && n.m.meshSize() > 0 }
	if left := dropIHave(ctl, n.sigTopic, young); left > 0 {
		n.m.ihaveLeft.Add(int64(left))
	}
}

// dropIHave removes ctl's IHAVE entries on topic when young reports that
// their sender is newly connected (asked once, only when there are any),
// and returns the number of message ids removed.
func dropIHave(ctl *pb.ControlMessage, topic string, young func() bool) (left int) {
	asked, isYoung := false, false
	keep := ctl.Ihave[:0]
	for _, ih := range ctl.Ihave {
		if ih.GetTopicID() == topic {
			if !asked {
				asked, isYoung = true, young()
			}
			if isYoung {
				left += len(ih.GetMessageIDs())
				continue
			}
		}
		keep = append(keep, ih)
	}
	clear(ctl.Ihave[len(keep):])
	ctl.Ihave = keep
	return left
}

// connSince records since when this node has been connected to each peer
// without a break, from the swarm's notifications: a peer reached over a
// relay and then directly (the relayed connection closed after the direct
// one opened) keeps its time. It holds connected peers only.
type connSince struct {
	mu    sync.Mutex
	since map[peer.ID]time.Time
}

// watchLinks registers connSince's notifiee with the host (before GossipSub
// starts, so before any peer connects).
func (n *Node) watchLinks() {
	n.connSince.since = map[peer.ID]time.Time{}
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { n.connSince.opened(c.RemotePeer(), c.Stat().Opened) },
		DisconnectedF: func(nw network.Network, c network.Conn) {
			n.connSince.closed(c.RemotePeer(), nw.Connectedness(c.RemotePeer()) == network.Connected)
		},
	})
}

// opened records a connection to p opened at at: p's time, unless it was
// connected already.
func (l *connSince) opened(p peer.ID, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.since[p]; !ok {
		l.since[p] = at
	}
}

// closed records that a connection to p closed; still tells whether
// another one is open, which keeps p's time.
func (l *connSince) closed(p peer.ID, still bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !still {
		delete(l.since, p)
	}
}

// connectedFor is how long this node has been connected to p without a
// break (0 when it is not connected).
func (n *Node) connectedFor(p peer.ID) time.Duration {
	n.connSince.mu.Lock()
	since, ok := n.connSince.since[p]
	n.connSince.mu.Unlock()
	if !ok {
		// Connected before the notifiee was registered (not for a node's
		// own host), or not at all: its oldest open connection.
		for _, c := range n.host.Network().ConnsToPeer(p) {
			if o := c.Stat().Opened; !o.IsZero() && (since.IsZero() || o.Before(since)) {
				since = o
			}
		}
	}
	if since.IsZero() {
		return 0
	}
	return time.Since(since)
}
