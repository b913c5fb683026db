package node

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// redialer dials, every Params.Redial, the Bootstrap peers the node is not
// connected to, all at once, each dial bounded by the interval; and when
// the node is connected to nobody at all (its peers left, or trimmed it,
// and it has no bootstrap peer or none answers), up to alonePeers of the
// mesh members it knew (see knownPeers). It waits for a round's dials
// before the next tick, so at most len(Bootstrap)+alonePeers dials are ever
// in flight. It stops with the node.
func (n *Node) redialer() {
	defer n.wg.Done()
	t := time.NewTicker(n.p.Redial)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		dial := func(ai peer.AddrInfo, what string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(n.ctx, n.p.Redial)
				defer cancel()
				ClearDialBackoff(n.host, ai.ID)
				if err := n.host.Connect(ctx, ai); err == nil {
					n.log.Info("node: reconnected to a "+what, "peer", ai.ID)
				} else {
					n.log.Debug("node: "+what+" still unreachable", "peer", ai.ID, "err", err)
				}
			}()
		}
		for _, ai := range n.cfg.Bootstrap {
			if ai.ID == n.self || n.host.Network().Connectedness(ai.ID) == network.Connected {
				continue
			}
			dial(ai, "bootstrap peer")
		}
		if len(n.host.Network().Peers()) == 0 {
			for _, p := range n.known.pick(alonePeers) {
				if addrs := n.host.Peerstore().Addrs(p); len(addrs) > 0 {
					dial(peer.AddrInfo{ID: p, Addrs: addrs}, "known peer")
				}
			}
		}
		wg.Wait()
	}
}

const (
	alonePeers = 4  // known peers a node left alone dials each Redial
	knownMax   = 64 // mesh members a node remembers
)

// knownPeers remembers the last knownMax mesh members the node was
// connected to or heard announce themselves, for a node left with no
// peer to find its way back without a bootstrap list.
type knownPeers struct {
	mu   sync.Mutex
	ids  []peer.ID // oldest first
	next int       // where pick starts, so that successive picks rotate
}

func (k *knownPeers) add(p peer.ID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if i := slices.Index(k.ids, p); i >= 0 {
		k.ids = slices.Delete(k.ids, i, i+1)
	}
	k.ids = append(k.ids, p)
	if len(k.ids) > knownMax {
		k.ids = k.ids[1:]
	}
}

// pick returns up to max known peers, newest first, rotating between calls.
func (k *knownPeers) pick(max int) []peer.ID {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []peer.ID
	for i := 0; i < len(k.ids) && len(out) < max; i++ {
		out = append(out, k.ids[len(k.ids)-1-(k.next+i)%len(k.ids)])
	}
	if len(k.ids) > 0 {
		k.next = (k.next + max) % len(k.ids)
	}
	return out
}
