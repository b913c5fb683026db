package node

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/signalmesh/signalmesh/internal/seal"
)

// Discovery: every node announces its own addresses on the mesh's "peers"
// topic, when peers join the topic (once for a burst of joins, see
// pace.go) and every Params.Discover; a node
// with fewer connections than Params.ConnLow dials the peers it hears of.
// GossipSub carries an announcement to the whole mesh, so a node that
// knows one peer learns of every other. The announcement names no peer
// id: it is the sealed message's signer (package seal), so a peer can
// announce only itself.

const (
	maxAnnounceAddrs = 32
	maxAnnounceBytes = 4096
	dialsInFlight    = 4
	maxPeerTimes     = 4096 // peers a peerTimes remembers
)

// peerTimes remembers when each peer last did something: was disconnected
// from the node (Node.drops), announced itself (Node.announced), sent a
// fresh lease message (Node.renewed), had its Hello answered
// (Node.helloed). At maxPeerTimes peers, a new one pushes
// out those older than keep, or else the oldest. Safe for concurrent use.
//
// drops: discovery does not dial straight back a peer that has just
// closed the connection: a hub that trims to its low water would
// otherwise be dialled again at once by every peer it trimmed that is
// still below its own low water (they hear the hub announce itself like
// any peer), and stay over its high water while it lasts. A node
// connected to nobody still returns to the peers it knew through the
// redialer.
type peerTimes struct {
	mu sync.Mutex
	at map[peer.ID]time.Time
}

// add notes p at now; keep is how long the caller asks about (recent).
func (d *peerTimes) add(p peer.ID, now time.Time, keep time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at == nil {
		d.at = map[peer.ID]time.Time{}
	}
	if _, ok := d.at[p]; !ok && len(d.at) >= maxPeerTimes {
		for q, t := range d.at {
			if now.Sub(t) > keep {
				delete(d.at, q)
			}
		}
		if len(d.at) >= maxPeerTimes { // still full: the oldest record goes
			var oldest peer.ID
			for q, t := range d.at {
				if oldest == "" || t.Before(d.at[oldest]) {
					oldest = q
				}
			}
			delete(d.at, oldest)
		}
	}
	d.at[p] = now
}

// forget drops p's record.
func (d *peerTimes) forget(p peer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.at, p)
}

// linked holds the peers the discoverer found connected directly when
// they last announced themselves. One that is no longer connected at its
// next announcement was dropped in between, whether or not the swarm has
// told watchDrops yet (its notifications run on their own goroutine,
// after the connection is gone: under load a trimmed peer heard the hub's
// next announcement first, and dialled it back at once). It forgets
// every peer when it holds maxDropped.
type linked struct {
	mu sync.Mutex
	at map[peer.ID]time.Time
}

// saw records that p announced itself while connected, directly or
// only through relays (losing that cools nothing down: coolsDown).
func (l *linked) saw(p peer.ID, now time.Time, direct bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !direct {
		delete(l.at, p)
		return
	}
	if l.at == nil || len(l.at) >= maxPeerTimes {
		l.at = map[peer.ID]time.Time{}
	}
	l.at[p] = now
}

// take returns and forgets when p was last seen connected directly.
func (l *linked) take(p peer.ID) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[p]
	delete(l.at, p)
	return t, ok
}

// has reports whether p is noted, however long ago.
func (d *peerTimes) has(p peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.at[p]
	return ok
}

// recent reports whether p was noted less than keep before now.
func (d *peerTimes) recent(p peer.ID, now time.Time, keep time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.at[p]
	return ok && now.Sub(t) < keep
}

// dialing holds the cancel functions of the discoverer's dials in flight,
// by peer. A dial is cancelled as soon as the peer is connected some other
// way (it dialled this node, through a relay say), so that no plain dial
// to the peer's direct addresses is left in flight when a hole punch with
// the peer begins: libp2p's swarm would join the hole punch's dial to the
// address to it, and a TCP simultaneous open would then meet two security
// handshake clients (the hole punch fails: "received unexpected handshake
// message").
type dialing struct {
	mu sync.Mutex
	m  map[peer.ID]*context.CancelFunc
}

// start records the dial to p in flight; done(p, what start returned)
// forgets it.
func (d *dialing) start(p peer.ID, cancel context.CancelFunc) *context.CancelFunc {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[peer.ID]*context.CancelFunc{}
	}
	d.m[p] = &cancel
	return &cancel
}

func (d *dialing) done(p peer.ID, c *context.CancelFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m[p] == c {
		delete(d.m, p)
	}
}

// cancel cancels the dial to p in flight, if any.
func (d *dialing) cancel(p peer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.m[p]; ok {
		(*c)()
		delete(d.m, p)
	}
}

// dropCooldown is how long discovery leaves a peer alone after it was
// disconnected: two grace periods (a trimming peer's new connections are
// safe from its trims for one), and at least three announcement intervals.
func (p Params) dropCooldown() time.Duration {
	return max(2*p.ConnGrace, 3*p.Discover)
}

// watchDrops records disconnections for the discoverer, and cancels its
// dial to a peer that connected otherwise. The callbacks run on the
// swarm's goroutines and only take a short lock.
func (n *Node) watchDrops() {
	n.dropWatch = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { n.dialing.cancel(c.RemotePeer()) },
		DisconnectedF: func(nw network.Network, c network.Conn) {
			p := c.RemotePeer()
			if nw.Connectedness(p) != network.Connected && coolsDown(c.RemoteMultiaddr()) {
				n.drops.add(p, time.Now(), n.p.dropCooldown())
			}
		},
	}
	n.host.Network().Notify(n.dropWatch)
}

// directTo reports whether the node has a direct (not relayed) connection
// to p.
func (n *Node) directTo(p peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if coolsDown(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// coolsDown reports whether losing the last connection to a peer at
// remote keeps discovery away from it for Params.dropCooldown: a direct
// connection, which a trimming hub closes. A relayed one ends most often
// with its relay (killed, restarted, cut off), and two edges that reach
// each other only through a relay must find each other again through the
// next one at once: in the NAT fault harness, an edge behind a symmetric
// NAT whose relay was restarted stayed apart from the other edges for the
// rest of the schedule. An edge that trims a relayed peer is dialled
// again at most once per three Discover intervals.
func coolsDown(remote ma.Multiaddr) bool { return !isCircuit(remote) }

type announcement struct {
	Addrs []string `json:"addrs"`
}

// announceAddrs are the addresses the node tells others: announce or
// listen addresses, and its addresses through relays holding a
// reservation. A node without Config.Relays adds the addresses its peers
// observed it at (behind a one-to-one NAT, a cloud host's, they are how it
// is reached); a node with relays is taken to be behind a NAT, and leaves
// them to hole punching. Peers would dial them the way they dial announced
// addresses, with SYNs the NAT drops; two peers behind NATs that dialled
// each other's at once would pass their NATs (a hole punch without the
// coordination) and meet as two security handshake clients; either way
// the connection attempt leaves a socket or a NAT mapping on the address
// pair for a minute or more, and the hole punch that follows can no
// longer dial from the port its peer observed (the kernel refuses the
// pair, and libp2p dials from another port).
func (n *Node) announceAddrs() []ma.Multiaddr {
	addrs := n.host.Addrs()
	if len(n.cfg.AnnounceAddrs) == 0 && len(n.cfg.Relays) == 0 {
		addrs = append(addrs, n.punchAddrs()...)
	}
	addrs = append(addrs, n.relayAddrs()...)
	addrs = ma.Unique(addrs)
	if len(addrs) > maxAnnounceAddrs {
		addrs = addrs[:maxAnnounceAddrs]
	}
	return addrs
}

func (n *Node) validatePeers(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if len(m.Data) > maxAnnounceBytes+seal.Overhead {
		n.m.reject("announcement")
		return pubsub.ValidationReject
	}
	from, body, err := n.openSealed(m)
	if err != nil {
		n.m.reject("announcement")
		return pubsub.ValidationReject
	}
	addrs, err := decodeAnnouncement(body)
	if err != nil {
		n.m.reject("announcement")
		return pubsub.ValidationReject
	}
	m.ValidatorData = opened[[]ma.Multiaddr]{from, addrs}
	return pubsub.ValidationAccept
}

func decodeAnnouncement(b []byte) ([]ma.Multiaddr, error) {
	var a announcement
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	out := make([]ma.Multiaddr, 0, len(a.Addrs))
	for _, s := range a.Addrs[:min(len(a.Addrs), maxAnnounceAddrs)] {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// announcer publishes the node's addresses every Params.Discover, and soon
// after a peer joins the topic (coalesced) unless it announced itself
// here within announcedWindow (pace.go). It stops with the node.
func (n *Node) announcer(joins *pubsub.TopicEventHandler) {
	defer n.wg.Done()
	joined := make(chan struct{}, 1)
	n.wg.Add(1)
	go func() { // the event handler has no channel: a goroutine turns it into one
		defer n.wg.Done()
		for {
			ev, err := joins.NextPeerEvent(n.ctx)
			if err != nil {
				return
			}
			if ev.Type == pubsub.PeerJoin {
				n.known.addMet(peer.AddrInfo{ID: ev.Peer, Addrs: n.host.Peerstore().Addrs(ev.Peer)})
				if n.announced.recent(ev.Peer, time.Now(), n.announcedWindow()) {
					n.m.joinsUnanswered.Add(1)
					continue // it has this node's last announcement (pace.go)
				}
				select {
				case joined <- struct{}{}:
				default:
				}
			}
		}
	}()
	t := time.NewTicker(n.p.Discover)
	defer t.Stop()
	pace := newJoinPacer()
	defer pace.stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-joined:
			pace.join(len(n.peersTopic.ListPeers()))
			continue
		case <-pace.C():
		case <-t.C:
		}
		pace.answered()
		var a announcement
		for _, m := range n.announceAddrs() {
			a.Addrs = append(a.Addrs, m.String())
		}
		b, _ := json.Marshal(a)
		if err := n.publishSealed(n.peersTopic, b); err != nil && n.ctx.Err() == nil {
			n.log.Debug("node: announce addresses", "err", err)
		}
	}
}

// announcedWindow: a join by a peer whose announcement arrived within it
// is not answered (pace.go).
func (n *Node) announcedWindow() time.Duration { return n.p.Discover * 3 / 2 }

// discoverer reads announcements and dials the peers it is not connected
// to while the node has fewer than Params.ConnLow connections, at most
// dialsInFlight at once, each peer at most once per three Discover
// intervals, and none that was disconnected within Params.dropCooldown.
// It stops with the node.
func (n *Node) discoverer() {
	defer n.wg.Done()
	sem := make(chan struct{}, dialsInFlight)
	tried := map[peer.ID]time.Time{}
	for {
		m, err := n.peersSub.Next(n.ctx)
		if err != nil {
			return
		}
		o, ok := m.ValidatorData.(opened[[]ma.Multiaddr])
		if !ok || o.from == n.self {
			continue
		}
		from := o.from
		n.announced.add(from, time.Now(), n.announcedWindow())
		addrs := usable(o.v, n.host.Network().ListenAddresses())
		if len(addrs) == 0 {
			continue
		}
		n.host.Peerstore().AddAddrs(from, addrs, peerstore.RecentlyConnectedAddrTTL)
		n.known.addHeard(peer.AddrInfo{ID: from, Addrs: addrs})
		now, cooldown := time.Now(), n.p.dropCooldown()
		if n.host.Network().Connectedness(from) == network.Connected {
			n.linked.saw(from, now, n.directTo(from))
			continue
		}
		if at, ok := n.linked.take(from); ok && now.Sub(at) < cooldown && !n.drops.recent(from, now, cooldown) {
			n.drops.add(from, now, cooldown)
		}
		if len(n.host.Network().Peers()) >= n.p.ConnLow {
			continue
		}
		if last, ok := tried[from]; ok && time.Since(last) < 3*n.p.Discover {
			continue
		}
		if n.drops.recent(from, now, cooldown) {
			continue
		}
		tried[from] = time.Now()
		for p, at := range tried { // forget old attempts
			if time.Since(at) > 3*n.p.Discover {
				delete(tried, p)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-n.ctx.Done():
			return
		}
		n.wg.Add(1)
		go func(ai peer.AddrInfo) {
			defer n.wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(n.ctx, 2*n.p.Discover)
			defer cancel()
			defer n.dialing.done(ai.ID, n.dialing.start(ai.ID, cancel))
			if n.host.Network().Connectedness(ai.ID) == network.Connected {
				return // it connected while this dial waited for its turn
			}
			ClearDialBackoff(n.host, ai.ID)
			if err := n.host.Connect(ctx, ai); err != nil {
				n.log.Debug("node: discovered peer unreachable", "peer", ai.ID, "err", err)
			}
		}(peer.AddrInfo{ID: from, Addrs: addrs})
	}
}

// usable drops loopback addresses unless the node itself listens only on
// loopback (a peer's loopback is not ours).
func usable(addrs, own []ma.Multiaddr) []ma.Multiaddr {
	local := true
	for _, a := range own {
		if !manet.IsIPLoopback(a) && !isCircuit(a) {
			local = false
		}
	}
	if local {
		return addrs
	}
	out := addrs[:0]
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	return out
}
