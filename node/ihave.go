package node

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// inspectRPC is GossipSub's inspector of incoming RPCs. It leaves out of
// an RPC the gossip (IHAVE) on the signals topic from a peer this node has
// been connected to for less than GossipSub's gossip window (HistoryGossip
// heartbeats): such gossip names frames published before the two were
// connected, most of all each side's last frames when a partition heals.
// Asking for them (IWANT) brought every one (a commit batch, up to
// hundreds of KiB) to every peer of the other side, beside the journal
// path that carries the same signals, and late, when the journal had
// delivered them already: at 32 peers that was most of a heal's bytes on
// GossipSub (BENCHMARKS.md). Gossip on the other topics (head
// announcements, leases), and on the signals topic from peers connected
// longer, is kept: it is the repair for peers outside a full mesh.
// Signals published before two peers were connected reach them by the
// journal; Weak ones, which have no journal, are not for a peer that was
// not connected when they were published.
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
	if left := dropIHave(ctl, n.sigTopic, func() bool { return n.connectedFor(from) < window }); left > 0 {
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

// connectedFor is how long this node has been connected to p: since its
// oldest open connection to p (0 when there is none).
func (n *Node) connectedFor(p peer.ID) time.Duration {
	var oldest time.Time
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if o := c.Stat().Opened; !o.IsZero() && (oldest.IsZero() || o.Before(oldest)) {
			oldest = o
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return time.Since(oldest)
}
