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
	// bitswapSessionTag begins the tags with which bitswap's sessions
	// (go-ds-crdt's DAG walks, one session each) protect the peer that
	// first sent them a block. They all become the one tag fetchTag,
	// worth fetchTagValue: a peer that served many sessions (and kept
	// their leaked protections, see connManager) is worth one fetch, not
	// one per session, so it does not outlast the GossipSub mesh peers.
	bitswapSessionTag = "bs-ses-"
	fetchTag          = "signalmesh-fetch"
	fetchTagValue     = 100
)

// connManager is libp2p's connection manager, except that GossipSub's mesh
// peers and the peers serving bitswap's block fetches are valued, not
// protected. GossipSub protects every peer it grafts on any topic, and a
// node with several topics would then keep up to D_hi peers per topic
// whatever its high water. Here a trim closes mesh peers last and
// GossipSub grafts others at its next heartbeat, so the high water holds.
//
// Bitswap (boxo v0.36.0) protects, in each session, the peer that first
// sent it a block, and unprotects the session's peers when the session
// ends; but the session's want sender, on its own goroutine, can take in
// that block after the session's end has unprotected its peers (the block
// reached the fetch first, which returned and ended the session), and the
// protection then outlives the session. A protection also outlives the
// connection: a peer stays protected until the node closes. go-ds-crdt
// opens a session per DAG walk, often of a single block, so a node lost
// that race again and again (under the race detector, on a loaded
// machine): TestConnectionLimits' hub kept 6 such peers, whose
// connections it may never trim, beside the 3 of its low water, at 9
// connections for a minute with a high water of 6; a trim leaves the
// protected peers and trims only the others to the low water, nothing if
// fewer than the low water are left. Valued, a peer serving blocks is
// trimmed after the others, and a fetch whose peer was trimmed asks
// others (want-haves to every connected peer).
//
// Protection stays for the node's own tags (bootstrap peers, relays) and
// those of libp2p's own services.
type connManager struct {
	*connmgr.BasicConnMgr
}

// valuedTag returns the tag and value that a tag protecting a peer
// becomes, and false for a tag that protects.
func valuedTag(tag string) (string, int, bool) {
	switch {
	case strings.HasPrefix(tag, "pubsub:"):
		return tag, meshTagValue, true
	case strings.HasPrefix(tag, bitswapSessionTag):
		return fetchTag, fetchTagValue, true
	}
	return "", 0, false
}

func (c connManager) Protect(p peer.ID, tag string) {
	if t, v, ok := valuedTag(tag); ok {
		c.TagPeer(p, t, v)
		return
	}
	c.BasicConnMgr.Protect(p, tag)
}

// Unprotect of a session's tag removes the fetch value, which the peer's
// other sessions in progress may still want: it is trimmed a little
// earlier, and they ask other peers.
func (c connManager) Unprotect(p peer.ID, tag string) bool {
	if t, _, ok := valuedTag(tag); ok {
		c.UntagPeer(p, t)
		return c.BasicConnMgr.IsProtected(p, "")
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
