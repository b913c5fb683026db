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
// mesh members it knew (see knownPeers; learned only while Params.Discover
// is on). It waits for a round's dials
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
		if len(n.topic.ListPeers()) == 0 { // no mesh member (a relay outside the mesh does not count)
			for _, ai := range n.known.pick(alonePeers) {
				if ai.ID != n.self {
					dial(ai, "known peer")
				}
			}
		}
		wg.Wait()
	}
}

const (
	alonePeers = 4  // known peers a node left alone dials each Redial
	knownMax   = 32 // mesh members a node remembers, of each kind
)

// knownPeers remembers, with their addresses, the last knownMax mesh
// members the node was connected to (they joined its signals topic) and
// the last knownMax it heard announce themselves, for a node left with no
// peer to find its way back without a bootstrap list. It tries the first
// kind first: announcements cannot push them out.
type knownPeers struct {
	mu    sync.Mutex
	met   []peer.AddrInfo // oldest first
	heard []peer.AddrInfo
	next  int // where pick starts, so that successive picks rotate
}

func remember(list []peer.AddrInfo, ai peer.AddrInfo) []peer.AddrInfo {
	if len(ai.Addrs) == 0 {
		return list
	}
	list = slices.DeleteFunc(list, func(o peer.AddrInfo) bool { return o.ID == ai.ID })
	list = append(list, ai)
	if len(list) > knownMax {
		list = list[1:]
	}
	return list
}

// met records a peer the node is connected to.
func (k *knownPeers) addMet(ai peer.AddrInfo) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.met = remember(k.met, ai)
}

// heard records a peer that announced itself.
func (k *knownPeers) addHeard(ai peer.AddrInfo) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.heard = remember(k.heard, ai)
}

// pick returns up to max known peers, those it met before those it heard
// of, newest first, rotating between calls.
func (k *knownPeers) pick(max int) []peer.AddrInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	all := make([]peer.AddrInfo, 0, len(k.met)+len(k.heard))
	for i := len(k.met) - 1; i >= 0; i-- {
		all = append(all, k.met[i])
	}
	for i := len(k.heard) - 1; i >= 0; i-- {
		if !slices.ContainsFunc(k.met, func(o peer.AddrInfo) bool { return o.ID == k.heard[i].ID }) {
			all = append(all, k.heard[i])
		}
	}
	var out []peer.AddrInfo
	for i := 0; i < len(all) && len(out) < max; i++ {
		out = append(out, all[(k.next+i)%len(all)])
	}
	if len(all) > 0 {
		k.next = (k.next + max) % len(all)
	}
	return out
}
