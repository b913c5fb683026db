package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Blocklist is a connection gater whose blocked peers can change at run
// time: give it to Config.Gater, then Block peers to cut a partition and
// Clear to heal it (and reconnect with Connect). Demos, tests and the bench
// harness use it; it is safe for concurrent use.
type Blocklist struct {
	mu      sync.Mutex
	blocked map[peer.ID]bool
}

var _ connmgr.ConnectionGater = (*Blocklist)(nil)

// NewBlocklist returns an empty blocklist.
func NewBlocklist() *Blocklist { return &Blocklist{blocked: map[peer.ID]bool{}} }

// Block refuses connections to and from ps from now on. Existing
// connections stay: close them with the host (Node.Disconnect).
func (b *Blocklist) Block(ps ...peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range ps {
		b.blocked[p] = true
	}
}

// Clear unblocks every peer.
func (b *Blocklist) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.blocked)
}

func (b *Blocklist) ok(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.blocked[p]
}

func (b *Blocklist) InterceptPeerDial(p peer.ID) bool                        { return b.ok(p) }
func (b *Blocklist) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return b.ok(p) }
func (b *Blocklist) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (b *Blocklist) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return b.ok(p)
}
func (b *Blocklist) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
