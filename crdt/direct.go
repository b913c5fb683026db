package crdt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
)

// Heads on join, sent to the peer that joined. When a peer joins the topic,
// a replica with Params.Host does not broadcast its heads to the whole
// topic, where every peer would verify and forward them: it sends them on a
// stream to the peers that joined, alone (the stream is authenticated by
// the connection, so the body is not sealed). After a partition heals, each
// of N peers sees N/2 joins in a second or two, and broadcasts answering
// each burst cost every peer N verifications per burst: the join storm of
// the 32-peer heal. A direct send costs one stream per pair.
//
// A head learned this way is new to the peers this replica is connected
// to as well, when the newcomer reached the mesh through it alone (a hub):
// once its block is local (fetched and checked, so a peer cannot make this
// replica relay heads that do not exist), the replica announces it on the
// topic, once, with any others learned in the same 20 ms.
//
// A relay is left out for a head that two other peers announced on the
// topic meanwhile. After a partition heals every peer learns the other
// side's heads on streams, and each relayed them: at 32 peers each of 32
// announcements of the same heads was verified and forwarded by every
// peer (80 KiB sent a peer in the heal). So a relay waits relayWait plus
// a random part that grows with the peers on the topic (relaySpreadPer
// each, up to relaySpreadMax), and the first two relays of a head spare
// the others theirs. Two, not one: a single member that announces a head
// and then does not serve it cannot hold back the relays of the peers that
// can. A topic announcement reaches the peers of the announcer's mesh
// paths; a peer outside them (a hub's leaf past its mesh) gets it from
// GossipSub's gossip (IHAVE) or the announcer's next rebroadcast: later,
// not never.
//
// A peer that does not speak the protocol (an older version) gets the
// broadcast, as before.
const (
	maxDirectBytes = 64 << 10 // one direct announcement: maxAnnouncedHeads CIDs fit
	directTimeout  = 5 * time.Second
	directSenders  = 8   // streams one replica has open at a time
	directQueue    = 256 // direct announcements waiting for the prefetcher; past it dropped (counted "heads_busy")
	relayWait      = 20 * time.Millisecond
	relayEvery     = 250 * time.Millisecond // at most one relay a quarter second: a busy batch keeps only the newest heads
	relaySpreadPer = 4 * time.Millisecond
	relaySpreadMax = 200 * time.Millisecond
	heardFor       = time.Second // a head two peers announced on the topic this recently is not relayed
	maxHeard       = 4096        // heads remembered as announced; cleared when full
)

func headsProtocol(topic string) protocol.ID { return protocol.ID("/signalmesh/heads/1.0.0/" + topic) }

// direct sends and receives head announcements on streams.
type direct struct {
	h     host.Host
	proto protocol.ID
	guard *headsGuard
	in    chan announcement       // received, for the prefetcher
	topic func() []peer.ID        // the topic's peers
	links func(cid.Cid) []cid.Cid // the blocks a local block links
	log   *slog.Logger
	sem   chan struct{}

	sent         atomic.Int64
	received     atomic.Int64
	failed       atomic.Int64
	relayed      atomic.Int64
	relayDropped atomic.Int64
	relaySpared  atomic.Int64

	// Streams being read, reset at close; handlers wait in hwg.
	mu      sync.Mutex
	closed  bool
	reading map[network.Stream]struct{}
	hwg     sync.WaitGroup

	self      peer.ID // this replica's host
	relayMu   sync.Mutex
	relaying  map[cid.Cid]peer.ID // head -> the peer whose stream brought it
	heardAt   map[cid.Cid]heardOf // heads announced on the topic lately (heard)
	relayWake chan struct{}
}

func newDirect(h host.Host, topic string, guard *headsGuard, log *slog.Logger) *direct {
	d := &direct{h: h, proto: headsProtocol(topic), guard: guard, in: make(chan announcement, directQueue), log: log,
		sem: make(chan struct{}, directSenders), reading: map[network.Stream]struct{}{},
		relaying: map[cid.Cid]peer.ID{}, heardAt: map[cid.Cid]heardOf{}, relayWake: make(chan struct{}, 1)}
	if h != nil {
		d.self = h.ID()
	}
	return d
}

// close stops taking streams, resets those being read and waits for their
// handlers. The handler stays registered, resetting every stream: removing
// it makes the host push its protocols to every connected peer (identify),
// and a mesh closing all at once then deadlocked in libp2p's event bus
// (identify's emitter blocked on a closing host's subscriber while
// autonat's Close waited for the bus: a 32-peer bench hung in Close 2 runs
// of 3).
func (d *direct) close() {
	d.mu.Lock()
	d.closed = true
	for s := range d.reading {
		_ = s.Reset()
	}
	d.mu.Unlock()
	d.hwg.Wait()
}

// handle reads one announcement from a stream and queues it for the
// prefetcher, after the checks the topic's validator makes. It runs on
// the host's goroutine; close resets the stream and waits for it.
func (d *direct) handle(s network.Stream) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = s.Reset()
		return
	}
	d.reading[s] = struct{}{}
	d.hwg.Add(1)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.reading, s)
		d.mu.Unlock()
		d.hwg.Done()
	}()
	from := s.Conn().RemotePeer()
	if d.guard.member != nil && !d.guard.member(from) {
		_ = s.Reset()
		d.guard.reject("heads_not_member")
		return
	}
	_ = s.SetReadDeadline(time.Now().Add(directTimeout))
	data, err := io.ReadAll(io.LimitReader(s, maxDirectBytes+1))
	switch {
	case err != nil: // a timeout, a reset, or close
		_ = s.Reset()
		if !d.isClosed() {
			d.guard.reject("heads_stream")
		}
		return
	case len(data) > maxDirectBytes:
		_ = s.Reset()
		d.guard.reject("heads_decode")
		return
	}
	_ = s.Close()
	if d.isClosed() || d.guard.check(from, data) != pubsub.ValidationAccept {
		return
	}
	d.received.Add(1)
	select {
	case d.in <- announcement{from: from, data: data}:
	default:
		d.guard.reject("heads_busy")
	}
}

func (d *direct) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// send sends data to each of peers on its own stream, at most
// directSenders at a time, in goroutines wg tracks, skipping peers no
// longer connected. fallback is called (once) if a peer does not speak the
// protocol.
func (d *direct) send(ctx context.Context, wg *sync.WaitGroup, peers []peer.ID, data []byte, fallback func()) {
	var once sync.Once
	for _, p := range peers {
		if d.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		select {
		case d.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-d.sem }()
			if err := d.sendOne(ctx, p, data); err != nil {
				d.failed.Add(1)
				if ctx.Err() == nil {
					d.log.Debug("crdt: send heads", "peer", p, "err", err)
					if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) {
						once.Do(fallback) // an older version: it reads the topic
					}
				}
				return
			}
			d.sent.Add(1)
		}()
	}
}

func (d *direct) sendOne(ctx context.Context, p peer.ID, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, directTimeout)
	defer cancel()
	s, err := d.h.NewStream(network.WithAllowLimitedConn(ctx, "heads"), p, d.proto)
	if err != nil {
		return err
	}
	_ = s.SetWriteDeadline(time.Now().Add(directTimeout))
	if _, err := s.Write(data); err != nil {
		_ = s.Reset()
		return err
	}
	return s.Close()
}

// relay queues a head that the stream of from brought, whose block is now
// local, for an announcement on the topic.
func (d *direct) relay(c cid.Cid, from peer.ID) {
	d.relayMu.Lock()
	if h, ok := d.heardAt[c]; ok && h.twice && time.Since(h.at) < heardFor {
		d.relayMu.Unlock()
		d.relaySpared.Add(1)
		return
	}
	first := len(d.relaying) == 0
	if _, ok := d.relaying[c]; !ok {
		if len(d.relaying) < maxAnnouncedHeads {
			d.relaying[c] = from
		} else {
			d.relayDropped.Add(1)
		}
	}
	d.relayMu.Unlock()
	if first {
		select {
		case d.relayWake <- struct{}{}:
		default:
		}
	}
}

// heardOf is a head heard on the topic: when, from whom first, and
// whether another peer announced it too.
type heardOf struct {
	at    time.Time
	from  peer.ID
	twice bool
}

// heard notes heads that from announced on the topic (this replica's own
// announcements are not counted): once two peers did, a relay of them is
// left out (see above).
func (d *direct) heard(from peer.ID, heads []cid.Cid) {
	if from == d.self {
		return
	}
	now := time.Now()
	d.relayMu.Lock()
	defer d.relayMu.Unlock()
	if len(d.heardAt)+len(heads) > maxHeard {
		clear(d.heardAt)
	}
	for _, c := range heads {
		h, ok := d.heardAt[c]
		switch {
		case !ok || now.Sub(h.at) >= heardFor:
			h = heardOf{at: now, from: from}
		case h.from != from:
			h.at, h.twice = now, true
		}
		d.heardAt[c] = h
		if _, ok := d.relaying[c]; ok && h.twice {
			delete(d.relaying, c)
			d.relaySpared.Add(1)
		}
	}
}

// relayDelay is the wait before a relay: relayWait, plus a random part
// that grows with the topic's peers, and at least relayEvery after the
// last relay.
func relayDelay(peers int, last time.Time) time.Duration {
	wait := relayWait
	if spread := min(time.Duration(peers)*relaySpreadPer, relaySpreadMax); spread > 0 {
		wait += rand.N(spread)
	}
	return max(wait, time.Until(last.Add(relayEvery)))
}

// relayLoop announces the heads relay queued (with publish), relayDelay
// after the first of a batch, until ctx ends. A head is left out when two
// other peers announced it on the topic meanwhile (heard), when another head of the batch
// links it (the later one is announced, and brings it), and when this
// replica's only topic peer is the one that sent it (a newcomer that
// learned the mesh's heads from its hub). Announcements carry at most
// perPeerQueued heads, which a receiver queues at once.
func (d *direct) relayLoop(ctx context.Context, wg *sync.WaitGroup, publish func(context.Context, []byte) error) {
	defer wg.Done()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.relayWake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(relayDelay(len(d.topic()), last)):
		}
		last = time.Now()
		d.relayMu.Lock()
		pending := d.relaying
		d.relaying = map[cid.Cid]peer.ID{}
		d.relayMu.Unlock()
		topic := d.topic()
		below := map[cid.Cid]bool{}
		for c := range pending {
			for _, l := range d.links(c) {
				below[l] = true
			}
		}
		var heads []cid.Cid
		for c, from := range pending {
			if !below[c] && slices.ContainsFunc(topic, func(p peer.ID) bool { return p != from }) {
				heads = append(heads, c)
			}
		}
		for len(heads) > 0 {
			n := min(len(heads), perPeerQueued)
			b, err := encodeHeads(heads[:n])
			heads = heads[n:]
			if err == nil {
				err = publish(ctx, b)
			}
			if err != nil {
				if ctx.Err() == nil {
					d.log.Debug("crdt: relay heads", "err", err)
				}
				break
			}
			d.relayed.Add(int64(n))
		}
	}
}

// DirectStats counts head announcements sent and received on streams (see
// direct.go): all zero without Params.Host.
type DirectStats struct {
	Sent, Received, Failed int64 // announcements
	Relayed, RelayDropped  int64 // heads learned on streams announced on the topic, and left out (too many waited)
	RelaySpared            int64 // heads learned on streams not relayed: two other peers announced them on the topic meanwhile
}

// Direct returns the replica's direct announcement counts.
func (r *Replica) Direct() DirectStats {
	if r.direct == nil {
		return DirectStats{}
	}
	return DirectStats{Sent: r.direct.sent.Load(), Received: r.direct.received.Load(), Failed: r.direct.failed.Load(),
		Relayed: r.direct.relayed.Load(), RelayDropped: r.direct.relayDropped.Load(), RelaySpared: r.direct.relaySpared.Load()}
}
