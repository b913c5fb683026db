package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	// Punch is the outcome of the last hole punch (DCUtR) with the peer
	// that this node took part in: "" if none; "direct" when it made a
	// direct connection; "dials failed: " and the error when the two
	// sides' simultaneous dials did not meet (the NATs in between do not
	// allow it, or the timing was off); "protocol: " and the error when
	// the exchange over the relayed connection failed.
	Punch string
	// Score is the peer's GossipSub score (see Config's peer scoring): 0
	// for a peer that behaves, negative for one whose messages were
	// rejected; below -80 GossipSub ignores it (graylisted).
	Score float64
}

// linkCounts counts the connected peers reached directly and only through
// a relay (the peers_direct and peers_relayed metrics).
func (n *Node) linkCounts() (direct, relayed int) {
	if n.host == nil {
		return 0, 0
	}
	for _, p := range n.host.Network().Peers() {
		d := false
		for _, c := range n.host.Network().ConnsToPeer(p) {
			d = d || !isCircuit(c.RemoteMultiaddr())
		}
		if d {
			direct++
		} else {
			relayed++
		}
	}
	return direct, relayed
}

// Links lists the connected peers, each direct or relayed, sorted by peer.
func (n *Node) Links() []Link {
	var out []Link
	var scores map[peer.ID]float64
	if m := n.scores.Load(); m != nil {
		scores = *m
	}
	n.nat.mu.Lock()
	punched := maps.Clone(n.nat.punched)
	n.nat.mu.Unlock()
	for _, p := range n.host.Network().Peers() {
		l := Link{Peer: p.String(), Score: scores[p], Punch: punched[p].outcome}
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
	punched  map[peer.ID]punch     // the last hole punch with each peer (at most maxPunched)
	joined   map[peer.ID]bool      // peers with a new connection, for relayed
	wake     chan struct{}         // relayed has peers to look at (capacity 1)

	punches  chan struct{}  // hole punches relayed started that are running (capacity punchesInFlight)
	punching sync.WaitGroup // those hole punches
}

// maxPunched bounds the hole punch outcomes a node remembers.
const maxPunched = 1024

// punch is how the last hole punch with a peer ended.
type punch struct {
	at      time.Time
	outcome string // "direct" or the error
}

// punchTracer records how each hole punch ends (Link.Punch).
type punchTracer nat

func (t *punchTracer) Trace(e *holepunch.Event) {
	var outcome string
	switch ev := e.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		outcome = "direct"
		if !ev.Success {
			outcome = "dials failed: " + ev.Error
		}
	case *holepunch.DirectDialEvt:
		if !ev.Success {
			return // a hole punch follows
		}
		outcome = "direct"
	case *holepunch.ProtocolErrorEvt:
		outcome = "protocol: " + ev.Error
	default:
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.punched[e.Remote]; !ok && len(t.punched) >= maxPunched {
		var oldest peer.ID
		for p, o := range t.punched {
			if oldest == "" || o.at.Before(t.punched[oldest].at) {
				oldest = p
			}
		}
		delete(t.punched, oldest)
	}
	t.punched[e.Remote] = punch{at: time.Now(), outcome: strings.Join(strings.Fields(outcome), " ")} // one line
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
	n.nat.punched = map[peer.ID]punch{}
	n.nat.joined = map[peer.ID]bool{}
	n.nat.wake = make(chan struct{}, 1)
	n.nat.punches = make(chan struct{}, punchesInFlight)
	n.host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		n.nat.mu.Lock()
		n.nat.joined[c.RemotePeer()] = true
		n.nat.mu.Unlock()
		select {
		case n.nat.wake <- struct{}{}:
		default:
		}
	}})
	n.nat.sub, err = n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return err
	}
	ider, ok := n.host.(interface{ IDService() identify.IDService })
	if !ok {
		return errors.New("node: libp2p host without an identify service")
	}
	n.nat.hps, err = holepunch.NewService(n.host, ider.IDService(), n.punchAddrs, holepunch.WithTracer((*punchTracer)(&n.nat)))
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

// Hole punching again. libp2p's hole punching service starts a hole
// punch when a relayed connection comes in (three attempts, each dial
// bounded by 10 s), and never again on that connection. The node tries
// again on a peer it still reaches only through a relay, from the side
// the relayed connection is inbound to (the side DCUtR starts from),
// punchRetry after the connection opened, then at doubling intervals up to
// punchRetryMax, at most punchesInFlight at once.
const (
	punchRetry      = 15 * time.Second
	punchRetryMax   = 8 * time.Minute
	punchesInFlight = 4
)

// punchAgain is when to try a hole punch with a peer again.
type punchAgain struct {
	next time.Time
	wait time.Duration
}

// relayed looks after the peers the node reaches through a relay. When a
// peer is connected directly too (a hole punch made a direct connection,
// or either side dialled the other's direct address), it closes the
// relayed connections to it: streams opened on a relayed connection,
// GossipSub's among them, stay on it for as long as it lasts, so without
// this the two would keep depending on the relay, and hold one of its
// circuits, although they can do without (GossipSub and the DAG sync open
// their streams again on the direct connection). When the two dialled
// each other through relays at once, the side with the lower peer id
// closes all their relayed connections but the oldest: a hole punch's
// stream goes on the connection libp2p deems best, and the peer refuses
// one that came on a connection it dialled. And it tries hole punching
// again (punchRetry). It looks at the peers with a new connection when
// they connect, and at every peer every Params.Redial. It stops with the
// node; the hole punches it started end when the hole punching service
// and the host are closed (Close waits for them).
func (n *Node) relayed() {
	defer n.wg.Done()
	t := time.NewTicker(n.p.Redial)
	defer t.Stop()
	again := map[peer.ID]*punchAgain{}
	for {
		var peers []peer.ID
		select {
		case <-n.ctx.Done():
			return
		case <-n.nat.wake:
			n.nat.mu.Lock()
			for p := range n.nat.joined {
				peers = append(peers, p)
			}
			clear(n.nat.joined)
			n.nat.mu.Unlock()
		case <-t.C:
			peers = n.host.Network().Peers()
			for p := range again {
				if n.host.Network().Connectedness(p) != network.Connected {
					delete(again, p)
				}
			}
		}
		for _, p := range peers {
			shut, relay := planLink(n.self, p, n.host.Network().ConnsToPeer(p))
			for _, c := range shut {
				n.log.Debug("node: closing a relayed connection", "peer", p, "addr", c.RemoteMultiaddr())
				_ = c.Close()
			}
			if relay == nil || relay.Stat().Direction != network.DirInbound {
				delete(again, p)
				continue
			}
			a := again[p]
			if a == nil {
				a = &punchAgain{next: relay.Stat().Opened.Add(punchRetry), wait: punchRetry}
				again[p] = a
			}
			if time.Now().Before(a.next) || !n.punchReady() {
				continue
			}
			select {
			case n.nat.punches <- struct{}{}:
			default:
				continue // punchesInFlight: next time
			}
			a.wait = min(2*a.wait, punchRetryMax)
			a.next = time.Now().Add(a.wait)
			n.nat.punching.Add(1)
			go func() {
				defer n.nat.punching.Done()
				defer func() { <-n.nat.punches }()
				if err := n.nat.hps.DirectConnect(p); err != nil {
					n.log.Debug("node: hole punch", "peer", p, "err", err)
				}
			}()
		}
	}
}

// planLink decides, from self's open connections to peer p, which relayed
// ones to close (all of them when a direct one is open; when there are
// several and self's peer id is the lower, all but the oldest), and
// returns the relayed connection left when p is reached only through one:
// relayed tries a hole punch on it if it is inbound.
func planLink(self, p peer.ID, conns []network.Conn) (shut []network.Conn, relay network.Conn) {
	var direct bool
	var circuits []network.Conn
	for _, c := range conns {
		if c.IsClosed() {
			continue
		}
		if isCircuit(c.RemoteMultiaddr()) {
			circuits = append(circuits, c)
		} else {
			direct = true
		}
	}
	switch {
	case len(circuits) == 0:
		return nil, nil
	case direct:
		return circuits, nil
	case len(circuits) > 1:
		if self > p {
			return nil, nil // p closes the others
		}
		slices.SortStableFunc(circuits, func(a, b network.Conn) int { return a.Stat().Opened.Compare(b.Stat().Opened) })
		return circuits[1:], nil
	}
	return nil, circuits[0]
}

// punchReady reports whether the hole punching service serves DCUtR: it
// does once the node has an address to offer (punchAddrs), and until
// then its DirectConnect waits, whatever happens to the service.
func (n *Node) punchReady() bool {
	return slices.Contains(n.host.Mux().Protocols(), holepunch.Protocol)
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
