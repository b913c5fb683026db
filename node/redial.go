package node

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// redialer dials, every Params.Redial, the Bootstrap peers the node is not
// connected to, all at once, each dial bounded by the interval; it waits for
// a round's dials before the next tick, so at most len(Bootstrap) dials are
// ever in flight. It stops with the node.
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
		for _, ai := range n.cfg.Bootstrap {
			if ai.ID == n.self || n.host.Network().Connectedness(ai.ID) == network.Connected {
				continue
			}
			wg.Add(1)
			go func(ai peer.AddrInfo) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(n.ctx, n.p.Redial)
				defer cancel()
				ClearDialBackoff(n.host, ai.ID)
				if err := n.host.Connect(ctx, ai); err == nil {
					n.log.Info("node: reconnected to a bootstrap peer", "peer", ai.ID)
				} else {
					n.log.Debug("node: bootstrap peer still unreachable", "peer", ai.ID, "err", err)
				}
			}(ai)
		}
		wg.Wait()
	}
}
