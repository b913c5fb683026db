package node

import (
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

// Tags of the connection manager's protected peers.
const (
	protectBootstrap = "signalmesh:bootstrap"
	protectRelay     = "signalmesh:relay"
	// meshTagValue is what a GossipSub mesh link on one topic adds to a
	// peer's value: the trim closes peers outside the mesh first.
	meshTagValue = 100
)

// connManager is libp2p's connection manager, except that GossipSub's mesh
// peers are valued, not protected: GossipSub protects every peer it grafts
// on any topic, and a node with several topics would then keep up to
// D_hi peers per topic whatever its high water. Here a trim closes mesh
// peers last and GossipSub grafts others at its next heartbeat, so the
// high water holds. Protection stays for the node's own tags (bootstrap
// peers, relays).
type connManager struct {
	*connmgr.BasicConnMgr
}

func (c connManager) Protect(p peer.ID, tag string) {
	if strings.HasPrefix(tag, "pubsub:") {
		c.TagPeer(p, tag, meshTagValue)
		return
	}
	c.BasicConnMgr.Protect(p, tag)
}

func (c connManager) Unprotect(p peer.ID, tag string) bool {
	if strings.HasPrefix(tag, "pubsub:") {
		c.UntagPeer(p, tag)
		return false
	}
	return c.BasicConnMgr.Unprotect(p, tag)
}

// limitOptions builds the connection manager and the resource manager of
// the node's host. The resource manager is returned too: the host does not
// close one it was given.
func limitOptions(p Params) ([]libp2p.Option, *rcmgrCloser, error) {
	// A trim runs when the count is at or over the high water at a check;
	// checks come every half grace period, at most 10 s apart.
	silence := min(p.ConnGrace/2, 10*time.Second)
	cm, err := connmgr.NewConnManager(p.ConnLow, p.ConnHigh, connmgr.WithGracePeriod(p.ConnGrace), connmgr.WithSilencePeriod(silence))
	if err != nil {
		return nil, nil, err
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	scaled := limits.AutoScale()
	if p.MaxConns > 0 {
		partial := rcmgr.PartialLimitConfig{System: rcmgr.ResourceLimits{
			Conns: rcmgr.LimitVal(p.MaxConns), ConnsInbound: rcmgr.LimitVal(p.MaxConns), ConnsOutbound: rcmgr.LimitVal(p.MaxConns),
		}}
		scaled = partial.Build(scaled)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(scaled))
	if err != nil {
		_ = cm.Close()
		return nil, nil, err
	}
	return []libp2p.Option{libp2p.ConnectionManager(connManager{cm}), libp2p.ResourceManager(rm)}, &rcmgrCloser{rm}, nil
}

type rcmgrCloser struct{ rm interface{ Close() error } }

func (r *rcmgrCloser) Close() error {
	if r == nil {
		return nil
	}
	return r.rm.Close()
}

// DefaultMaxConns is the connection limit of the resource manager when
// Params.MaxConns is zero: libp2p's limit scaled to this machine's memory
// and file descriptors.
func DefaultMaxConns() int {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	return rcmgr.NewFixedLimiter(limits.AutoScale()).GetSystemLimits().GetConnTotalLimit()
}
