package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Link is one connected peer and how the node reaches it.
type Link struct {
	Peer string
	// Direct is true when at least one connection to the peer is direct;
	// false when every connection goes through a relay.
	Direct bool
	// Addr is the remote address of the connection in use (the direct
	// one when there is one).
	Addr string
	// Score is the peer's GossipSub score (see Config's peer scoring): 0
	// for a peer that behaves, negative for one whose messages were
	// rejected; below -80 GossipSub ignores it (graylisted).
	Score float64
}

// Links lists the connected peers, each direct or relayed, sorted by peer.
func (n *Node) Links() []Link {
	var out []Link
	var scores map[peer.ID]float64
	if m := n.scores.Load(); m != nil {
		scores = *m
	}
	for _, p := range n.host.Network().Peers() {
		l := Link{Peer: p.String(), Score: scores[p]}
		for _, c := range n.host.Network().ConnsToPeer(p) {
			if !isCircuit(c.RemoteMultiaddr()) {
				l.Direct, l.Addr = true, c.RemoteMultiaddr().String()
				break
			}
			l.Addr = c.RemoteMultiaddr().String()
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Link) int {
		if a.Peer < b.Peer {
			return -1
		}
		if a.Peer > b.Peer {
			return 1
		}
		return 0
	})
	return out
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// maxObserved bounds the observed addresses a node keeps: one per
// transport per NAT it sits behind, and some to spare.
const maxObserved = 8

// nat is the node's relay service, relay reservations and hole punching.
type nat struct {
	relay *relayv2.Relay     // nil unless Config.RelayService
	hps   *holepunch.Service // DCUtR
	sub   event.Subscription // identify results: our observed addresses

	mu       sync.Mutex
	observed []ma.Multiaddr        // our addresses as peers saw them, latest last (at most maxObserved)
	reserved map[peer.ID]time.Time // relays holding a reservation, until when
}

// startNAT starts the relay service (Config.RelayService) and hole
// punching. libp2p's own hole punching and relay addresses keep to public
// IP addresses; the node's offer every address its peers observed and its
// relays' addresses as they are, so that NATs between private networks
// (a site's, a carrier's) are crossed too.
func (n *Node) startNAT() error {
	var err error
	if n.cfg.RelayService {
		n.nat.relay, err = relayv2.New(n.host, relayv2.WithInfiniteLimits(),
			relayv2.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true }))
		if err != nil {
			return fmt.Errorf("node: relay service: %w", err)
		}
	}
	n.nat.reserved = map[peer.ID]time.Time{}
	n.nat.sub, err = n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return err
	}
	ider, ok := n.host.(interface{ IDService() identify.IDService })
	if !ok {
		return errors.New("node: libp2p host without an identify service")
	}
	n.nat.hps, err = holepunch.NewService(n.host, ider.IDService(), n.punchAddrs)
	return err
}

// punchAddrs are the addresses a peer may reach us at directly: our own
// listen addresses and those our peers observed.
func (n *Node) punchAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.host.Network().ListenAddresses() {
		if !manet.IsIPLoopback(a) && !manet.IsIPUnspecified(a) && !isCircuit(a) {
			out = append(out, a)
		}
	}
	if ifaces, err := n.host.Network().InterfaceListenAddresses(); err == nil {
		for _, a := range ifaces {
			if !manet.IsIPLoopback(a) && !isCircuit(a) {
				out = append(out, a)
			}
		}
	}
	n.nat.mu.Lock()
	out = append(out, n.nat.observed...)
	n.nat.mu.Unlock()
	return ma.Unique(out)
}

// watchIdentify records the address each identified peer saw us at.
func (n *Node) watchIdentify() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-n.nat.sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerIdentificationCompleted)
			if ev.ObservedAddr == nil || isCircuit(ev.ObservedAddr) || manet.IsIPLoopback(ev.ObservedAddr) ||
				ev.Conn == nil || isCircuit(ev.Conn.RemoteMultiaddr()) {
				continue
			}
			n.nat.mu.Lock()
			o := slices.DeleteFunc(n.nat.observed, ev.ObservedAddr.Equal)
			n.nat.observed = append(o, ev.ObservedAddr)
			if len(n.nat.observed) > maxObserved {
				n.nat.observed = n.nat.observed[1:]
			}
			n.nat.mu.Unlock()
		}
	}
}

// relayAddrs are our addresses through the relays holding a reservation.
func (n *Node) relayAddrs() []ma.Multiaddr {
	n.nat.mu.Lock()
	defer n.nat.mu.Unlock()
	var out []ma.Multiaddr
	for _, r := range n.cfg.Relays {
		if until, ok := n.nat.reserved[r.ID]; !ok || time.Now().After(until) {
			continue
		}
		circuit, err := ma.NewMultiaddr("/p2p/" + r.ID.String() + "/p2p-circuit")
		if err != nil {
			continue
		}
		for _, a := range n.host.Peerstore().Addrs(r.ID) {
			if !isCircuit(a) {
				out = append(out, a.Encapsulate(circuit))
			}
		}
	}
	return out
}

// reserver keeps a reservation on each of Config.Relays: it dials the
// relay, reserves, and renews the reservation a minute before it expires
// (or retries every Params.Redial after a failure). It stops with the node.
func (n *Node) reserver() {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		next := n.p.Redial * 15
		for _, r := range n.cfg.Relays {
			if r.ID == n.self {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 2*n.p.Redial)
			if n.host.Network().Connectedness(r.ID) != network.Connected {
				ClearDialBackoff(n.host, r.ID)
				_ = n.host.Connect(ctx, r)
			}
			res, err := client.Reserve(ctx, n.host, r)
			cancel()
			n.nat.mu.Lock()
			if err != nil {
				delete(n.nat.reserved, r.ID)
				next = n.p.Redial
				n.log.Debug("node: relay reservation failed", "relay", r.ID, "err", err)
			} else {
				if _, had := n.nat.reserved[r.ID]; !had {
					n.log.Info("node: reserved a slot on a relay", "relay", r.ID, "until", res.Expiration)
				}
				n.nat.reserved[r.ID] = res.Expiration
				next = min(next, max(time.Until(res.Expiration)-time.Minute, n.p.Redial))
			}
			n.nat.mu.Unlock()
		}
		t.Reset(next)
	}
}

func (n *Node) closeNAT() error {
	var errs []error
	if n.nat.hps != nil {
		errs = append(errs, n.nat.hps.Close())
	}
	if n.nat.relay != nil {
		errs = append(errs, n.nat.relay.Close())
	}
	if n.nat.sub != nil {
		errs = append(errs, n.nat.sub.Close())
	}
	return errors.Join(errs...)
}
