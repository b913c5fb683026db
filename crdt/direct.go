package crdt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
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
// A peer that does not speak the protocol (an older version) gets the
// broadcast, as before.
const (
	maxDirectBytes = 64 << 10 // one direct announcement: maxAnnouncedHeads CIDs fit
	directTimeout  = 5 * time.Second
	directSenders  = 8   // streams one replica has open at a time
	directQueue    = 256 // direct announcements waiting for the prefetcher; past it dropped (counted "heads_busy")
	relayWait      = 20 * time.Millisecond
)

func headsProtocol(topic string) protocol.ID { return protocol.ID("/signalmesh/heads/1.0.0/" + topic) }

// direct sends and receives head announcements on streams.
type direct struct {
	h     host.Host
	proto protocol.ID
	guard *headsGuard
	in    chan announcement // received, for the prefetcher
	log   *slog.Logger
	sem   chan struct{}

	sent     atomic.Int64
	received atomic.Int64
	failed   atomic.Int64

	relayMu   sync.Mutex
	relaying  []cid.Cid
	relayWake chan struct{}
}

func newDirect(h host.Host, topic string, guard *headsGuard, log *slog.Logger) *direct {
	return &direct{h: h, proto: headsProtocol(topic), guard: guard, in: make(chan announcement, directQueue), log: log,
		sem: make(chan struct{}, directSenders), relayWake: make(chan struct{}, 1)}
}

// handle reads one announcement from a stream and queues it for the
// prefetcher, after the checks the topic's validator makes.
func (d *direct) handle(s network.Stream) {
	from := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(directTimeout))
	data, err := io.ReadAll(io.LimitReader(s, maxDirectBytes+1))
	if err != nil || len(data) > maxDirectBytes {
		_ = s.Reset()
		d.guard.reject("heads_decode")
		return
	}
	_ = s.Close()
	if d.guard.check(from, data) != pubsub.ValidationAccept {
		return
	}
	d.received.Add(1)
	select {
	case d.in <- announcement{from: from, data: data}:
	default:
		d.guard.reject("heads_busy")
	}
}

// send sends data to each of peers on its own stream, at most
// directSenders at a time, in goroutines wg tracks. fallback is called
// (once) if a peer could not be reached or does not speak the protocol.
func (d *direct) send(ctx context.Context, wg *sync.WaitGroup, peers []peer.ID, data []byte, fallback func()) {
	var once sync.Once
	for _, p := range peers {
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
					once.Do(fallback)
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

// relay queues a head learned from a direct announcement, whose block is
// now local, for an announcement on the topic.
func (d *direct) relay(c cid.Cid) {
	d.relayMu.Lock()
	if len(d.relaying) < maxAnnouncedHeads {
		d.relaying = append(d.relaying, c)
	}
	d.relayMu.Unlock()
	select {
	case d.relayWake <- struct{}{}:
	default:
	}
}

// relayLoop announces the heads relay queued, relayWait after the first
// of a batch, until ctx ends.
func (d *direct) relayLoop(ctx context.Context, wg *sync.WaitGroup, bc *broadcaster) {
	defer wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.relayWake:
			t.Reset(relayWait)
			continue
		case <-t.C:
		}
		d.relayMu.Lock()
		heads := d.relaying
		d.relaying = nil
		d.relayMu.Unlock()
		if len(heads) == 0 {
			continue
		}
		var msg pb.CRDTBroadcast
		for _, c := range heads {
			msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
		}
		b, err := proto.Marshal(&msg)
		if err == nil {
			err = bc.Broadcast(ctx, b)
		}
		if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			d.log.Debug("crdt: relay heads", "err", err)
		}
	}
}

// DirectStats counts head announcements sent and received on streams (see
// direct.go): all zero without Params.Host.
type DirectStats struct {
	Sent, Received, Failed int64
}

// Direct returns the replica's direct announcement counts.
func (r *Replica) Direct() DirectStats {
	if r.direct == nil {
		return DirectStats{}
	}
	return DirectStats{Sent: r.direct.sent.Load(), Received: r.direct.received.Load(), Failed: r.direct.failed.Load()}
}
