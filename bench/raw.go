package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	ipfslite "github.com/hsanjuan/ipfs-lite"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	dscrdt "github.com/ipfs/go-ds-crdt"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/signalmesh/signalmesh/node"
)

// RawOptions configure a baseline peer.
type RawOptions struct {
	// DataDir for a pebble store; empty: in memory.
	DataDir string
	// Gater, optional, to cut partitions.
	Gater connmgr.ConnectionGater
	// CRDT starts a go-ds-crdt replica (with ipfs-lite and the
	// PubSubBroadcaster), as its README shows; otherwise GossipSub only.
	CRDT bool
	// Rebroadcast is go-ds-crdt's RebroadcastInterval; 0 keeps its default
	// (one minute).
	Rebroadcast time.Duration
	// Topic for GossipSub / the CRDT broadcaster.
	Topic string
	// Reporter, optional, counts the host's bytes.
	Reporter metrics.Reporter
	// Tuned gives GossipSub the options a signalmesh node gives its own
	// (node.startPubSub): flood publish, 1,024-deep peer outbound and
	// validation queues, a 4,096-deep subscription buffer, and its mesh
	// degrees (node.GossipSubParams: D 4 and Dlazy 1, where GossipSub's defaults are 6). What it
	// cannot copy is signalmesh's framing (one GossipSub message per commit
	// batch): a baseline message is one signal.
	Tuned bool
}

// tunedOptions are signalmesh's own GossipSub options (node.startPubSub),
// minus its message id function, validators and tracer.
func tunedOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithValidateQueueSize(1024),
		pubsub.WithGossipSubParams(node.GossipSubParams(node.Params{})),
	}
}

// tunedBuffer is signalmesh's subscription buffer (node.startPubSub).
const tunedBuffer = 4096

// RawPeer is a baseline peer: a libp2p host with GossipSub (default
// options, or signalmesh's with RawOptions.Tuned), and optionally a go-ds-crdt store, built the way their own
// documentation shows, with no signalmesh code.
type RawPeer struct {
	Host  host.Host
	PS    *pubsub.PubSub
	Topic *pubsub.Topic // joined unless CRDT (the broadcaster joins it then)
	CRDT  *dscrdt.Datastore
	RPCs  RPCCounter   // GossipSub RPCs sent and received
	Puts  atomic.Int64 // keys the CRDT put hook reported (local and remote)

	tuned  bool
	store  ds.Batching
	dag    *ipfslite.Peer
	cancel context.CancelFunc
}

// NewRawPeer starts a baseline peer; connect peers only after all are started.
func NewRawPeer(o RawOptions) (*RawPeer, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &RawPeer{cancel: cancel, tuned: o.Tuned}
	opts := []libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay()}
	if o.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(o.Gater))
	}
	if o.Reporter != nil {
		opts = append(opts, libp2p.BandwidthReporter(o.Reporter))
	}
	var err error
	if p.Host, err = libp2p.New(opts...); err != nil {
		cancel()
		return nil, err
	}
	psOpts := []pubsub.Option{pubsub.WithRawTracer(&p.RPCs)}
	if o.Tuned {
		psOpts = append(psOpts, tunedOptions()...)
	}
	if p.PS, err = pubsub.NewGossipSub(ctx, p.Host, psOpts...); err != nil {
		p.Close()
		return nil, err
	}
	if !o.CRDT {
		if p.Topic, err = p.PS.Join(o.Topic); err != nil {
			p.Close()
			return nil, err
		}
		return p, nil
	}
	if o.DataDir == "" {
		p.store = dssync.MutexWrap(ds.NewMapDatastore())
	} else if p.store, err = pebbleds.NewDatastore(filepath.Join(o.DataDir, "store"), pebbleds.WithCacheSize(32<<20)); err != nil { // as a node
		p.Close()
		return nil, err
	}
	if p.dag, err = ipfslite.New(ctx, p.store, nil, p.Host, nil, &ipfslite.Config{ReprovideInterval: -1}); err != nil {
		p.Close()
		return nil, err
	}
	bc, err := dscrdt.NewPubSubBroadcaster(ctx, p.PS, o.Topic)
	if err != nil {
		p.Close()
		return nil, err
	}
	copts := dscrdt.DefaultOptions()
	copts.Logger = quietLogger{}
	copts.PutHook = func(ds.Key, []byte) { p.Puts.Add(1) }
	if o.Rebroadcast > 0 {
		copts.RebroadcastInterval = o.Rebroadcast
	}
	if p.CRDT, err = dscrdt.New(p.store, ds.NewKey("/crdt"), p.dag, bc, copts); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// RPCCounter is a GossipSub tracer that counts RPCs.
type RPCCounter struct {
	In, Out atomic.Int64
}

var _ pubsub.RawTracer = (*RPCCounter)(nil)

func (c *RPCCounter) RecvRPC(*pubsub.RPC)                    { c.In.Add(1) }
func (c *RPCCounter) SendRPC(*pubsub.RPC, peer.ID)           { c.Out.Add(1) }
func (*RPCCounter) AddPeer(peer.ID, protocol.ID)             {}
func (*RPCCounter) RemovePeer(peer.ID)                       {}
func (*RPCCounter) Join(string)                              {}
func (*RPCCounter) Leave(string)                             {}
func (*RPCCounter) Graft(peer.ID, string)                    {}
func (*RPCCounter) Prune(peer.ID, string)                    {}
func (*RPCCounter) ValidateMessage(*pubsub.Message)          {}
func (*RPCCounter) DeliverMessage(*pubsub.Message)           {}
func (*RPCCounter) RejectMessage(*pubsub.Message, string)    {}
func (*RPCCounter) DuplicateMessage(*pubsub.Message)         {}
func (*RPCCounter) ThrottlePeer(peer.ID)                     {}
func (*RPCCounter) DropRPC(*pubsub.RPC, peer.ID)             {}
func (*RPCCounter) UndeliverableMessage(*pubsub.Message)     {}
func (*RPCCounter) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (*RPCCounter) OnClosedOutboundStream(peer.ID)           {}

// Count returns the number of keys in the CRDT store.
func (p *RawPeer) Count(ctx context.Context) (int, error) {
	res, err := p.CRDT.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, err
	}
	all, err := res.Rest()
	return len(all), err
}

// Consume subscribes to the peer's topic and calls f with each message's
// data until ctx ends; wg tracks the consuming goroutine.
func (p *RawPeer) Consume(ctx context.Context, wg *sync.WaitGroup, f func(data []byte)) error {
	var subOpts []pubsub.SubOpt
	if p.tuned {
		subOpts = append(subOpts, pubsub.WithBufferSize(tunedBuffer))
	}
	sub, err := p.Topic.Subscribe(subOpts...)
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer sub.Cancel()
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			f(m.Data)
		}
	}()
	return nil
}

// CountMessages adds one to n per message on the peer's topic (see Consume).
func (p *RawPeer) CountMessages(ctx context.Context, wg *sync.WaitGroup, n *atomic.Int64) error {
	return p.Consume(ctx, wg, func([]byte) { n.Add(1) })
}

// Close stops the peer in the order go-ds-crdt asks for.
func (p *RawPeer) Close() error {
	p.cancel()
	var errs []error
	if p.CRDT != nil {
		errs = append(errs, p.CRDT.Close())
	}
	if p.Topic != nil {
		_ = p.Topic.Close()
	}
	if p.dag != nil {
		errs = append(errs, p.dag.BlockService().Close())
	}
	if p.Host != nil {
		errs = append(errs, p.Host.Close())
	}
	if p.store != nil {
		errs = append(errs, p.store.Close())
	}
	return errors.Join(errs...)
}

// Connect connects every pair of hosts.
func Connect(ctx context.Context, hosts []host.Host) error {
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			node.ClearDialBackoff(a, b.ID())
			if err := a.Connect(ctx, b.Peerstore().PeerInfo(b.ID())); err != nil {
				return fmt.Errorf("connect %s-%s: %w", a.ID(), b.ID(), err)
			}
		}
	}
	return nil
}

// Await polls cond every 5 ms until it holds or timeout passes; it returns
// how long it took.
func Await(ctx context.Context, timeout time.Duration, cond func() bool) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("bench: condition not met after %v", timeout)
		case <-t.C:
		}
	}
	return time.Since(start), nil
}

type quietLogger struct{}

func (quietLogger) Debug(...any)          {}
func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Error(...any)          {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatal(...any)          {}
func (quietLogger) Fatalf(string, ...any) {}
func (quietLogger) Info(...any)           {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Panic(...any)          {}
func (quietLogger) Panicf(string, ...any) {}
func (quietLogger) Warn(...any)           {}
func (quietLogger) Warnf(string, ...any)  {}

// Quiet returns a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
