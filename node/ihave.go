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
// an RPC the gossip (IHAVE) on the signals topic from a newcomer, as long
// as this node has a mesh on that topic: a peer this node has been
// connected to for less than GossipSub's gossip window (HistoryGossip
// heartbeats, 3 s), unless this node resumed a journal and the peer is
// one it met as it came back (connected within the window of its first
// connection since the restart).
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
// repair misses. A node without a mesh on the topic (a leaf a full hub
// refused, or one not yet grafted) keeps all gossip: it may be its only
// path. A restarted node keeps the gossip of the peers it meets as it
// comes back (within 3 s of its first connection): it names what was
// published while the node was down, the gap
// just behind what those peers' meshes send it next, and the journal path
// can take far longer to fill that (a DAG fetch that asked a paused peer
// waits up to 20 s in go-ds-crdt; the fault harness's short runs give a
// dependency 5 s). Gossip on the other topics (head announcements,
// leases) is kept.
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
	young := func() bool { return n.connSince.newcomer(from, window) && n.m.meshSize() > 0 }
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
	mu        sync.Mutex
	restarted bool      // the node resumed a journal it had
	start     time.Time // a restarted node's first connection; zero before it (and always on a fresh node)
	since     map[peer.ID]time.Time
	conns     func(peer.ID) []network.Conn // the host's connections to a peer
}

// watchLinks registers connSince's notifiee with the host (before GossipSub
// starts, so before any peer connects).
func (n *Node) watchLinks() {
	n.connSince.since = map[peer.ID]time.Time{}
	n.connSince.conns = n.host.Network().ConnsToPeer
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
	if l.restarted && l.start.IsZero() {
		l.start = at
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

// resumed records that this node restarted on a journal it had: the peers
// it connects to within the gossip window of its first connection (one
// made before this call included) are met as it comes back, not
// newcomers.
func (l *connSince) resumed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.restarted = true
	for _, at := range l.since {
		if l.start.IsZero() || at.Before(l.start) {
			l.start = at
		}
	}
}

// newcomer reports whether p has been connected without a break for less
// than window, and not since within window of a restarted node's first
// connection (a peer met as the node came back is not one). A peer not
// connected is a newcomer.
func (l *connSince) newcomer(p peer.ID, window time.Duration) bool {
	since, ok := l.connectedSince(p)
	return !ok || time.Since(since) < window && since.Sub(l.started()) >= window
}

func (l *connSince) started() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.start
}

// connectedSince is since when this node has been connected to p without a
// break (false when it is not connected).
func (l *connSince) connectedSince(p peer.ID) (time.Time, bool) {
	l.mu.Lock()
	since, ok := l.since[p]
	conns := l.conns
	l.mu.Unlock()
	if ok || conns == nil {
		return since, ok
	}
	// Connected before the notifiee was registered (not for a node's own
	// host), or not at all: its oldest open connection.
	for _, c := range conns(p) {
		if o := c.Stat().Opened; !o.IsZero() && (since.IsZero() || o.Before(since)) {
			since = o
		}
	}
	return since, !since.IsZero()
}
