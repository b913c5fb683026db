// Package crdt is signalmesh's Merkle-CRDT layer: a go-ds-crdt store over
// the peer's DAG service, with a GossipSub broadcaster that announces the DAG
// heads whenever a peer joins the topic (not only on go-ds-crdt's timer), so
// that a healed partition or a newly started peer converges in seconds. A
// head's first announcement carries the recipe of its block, so that a
// replica that already holds the block's entries (a node's signals come by
// gossip first) builds it instead of fetching it (recipe.go); heads are
// fetched before go-ds-crdt sees them (prefetch.go), and blocks from other
// replicas are vetted before they are merged (check.go).
package crdt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh/internal/seal"
)

// Params configure a Replica.
type Params struct {
	// Namespace under the store where the CRDT keeps its state. Required.
	Namespace ds.Key
	// Topic is the GossipSub topic for head announcements. Required.
	Topic string
	// RebroadcastInterval is how often go-ds-crdt re-announces heads that no
	// one else announced lately. Default 2 s. Joins trigger an announcement
	// at once besides.
	RebroadcastInterval time.Duration
	// RepairEvery is how often a store go-ds-crdt marked dirty (a fetch
	// failed) has its holes filled, when Has is set (repairLoop). Default
	// 10 s.
	RepairEvery time.Duration
	// MaxBatchDeltaSize bounds one delta (DAG node), in bytes. Default 1 MiB
	// (GossipSub and bitswap handle blocks up to a few MiB).
	MaxBatchDeltaSize int
	// Workers is the number of DAG walkers. Default 5.
	Workers int
	// PutHook is called for every key that gets a value, local or remote.
	// It runs on go-ds-crdt's goroutines and may block to push back.
	PutHook func(key ds.Key, value []byte)
	// Has reports whether a block is in the local blockstore. When set,
	// announced heads reach go-ds-crdt only once their block is local (see
	// the prefetcher), so that a head nobody can serve holds up nothing.
	Has func(context.Context, cid.Cid) (bool, error)
	// Value, when set, returns the value this replica holds for a key by
	// another path than the journal (nil: none), for building announced
	// blocks from their recipes instead of fetching them (see recipe.go).
	// It needs Has, is called from the prefetcher's goroutines,
	// concurrently, and must not block.
	Value func(key string) []byte
	// CheckEntry, when set, vets every entry (key and value) of a delta
	// that comes from another replica, before go-ds-crdt merges it: a
	// block with one entry it refuses is not merged at all (see
	// check.go). It is called from go-ds-crdt's and the prefetcher's
	// goroutines, concurrently.
	CheckEntry func(key string, value []byte) error
	// Immutable makes entries write-once: a delta from another replica
	// that tombstones a key, or gives a key that has a value another
	// value, is refused.
	Immutable bool
	// OnRefuse is told of each refused block, once (while the replica
	// remembers it: the last 1,024). It must not block.
	OnRefuse func(*RefusedError)
	// OnSlowFetch, when set, is told (slow true) of an announcer whose
	// head block has not arrived SlowFetch after the fetch began (once
	// per fetch; the fetch goes on), and (slow false) when such a fetch
	// ends with the block. A connected peer whose blocks do not come may
	// be one the DAG service lost track of (see node's relinker). It
	// must not block.
	OnSlowFetch func(announcer peer.ID, slow bool)
	// SlowFetch is when OnSlowFetch is told. Default 5 s.
	SlowFetch time.Duration
	// Self is this host's peer id: its own head announcements skip the
	// topic validator's limits. Empty: they are checked like any other.
	Self peer.ID
	// Member, when set, says which peers may announce heads (see
	// guard.go): an announcement from another is rejected.
	Member func(peer.ID) bool
	// Key, when set, seals this replica's head announcements (package
	// seal: signed by this key for the topic) and makes the validator
	// require a seal, whose signer is then the announcer: for a PubSub
	// that signs nothing (StrictNoSign, as a node runs it). Without a Key
	// the PubSub must sign its messages (StrictSign, its default), and the
	// announcer is the message's author.
	Key crypto.PrivKey
	// OnReject is told of each head announcement the topic's validator
	// rejects or ignores, by reason ("heads_seal", "heads_unauthenticated",
	// "heads_decode", "heads_too_many", "heads_cid", "heads_not_member",
	// "heads_rate"), and each one on a stream it refuses or cannot read
	// (those reasons, "heads_stream": a read that failed or timed out, and
	// "heads_busy": too many waiting). It must not block.
	OnReject func(reason string)
	// Host, when set with Has, answers a peer that joins the topic with
	// this replica's heads on a stream to that peer alone, instead of an
	// announcement to the whole topic (see direct.go). It must be the
	// PubSub's host. After Close the replica's protocol stays registered
	// on it, resetting every stream, until the host closes.
	Host host.Host
	// Hold keeps every head announcement from go-ds-crdt until Release:
	// the replica merges nothing from other replicas meanwhile, so that a
	// snapshot can be written into it first (Seed, snapshot.go).
	Hold bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Replica is a go-ds-crdt store with its broadcaster.
type Replica struct {
	*dscrdt.Datastore
	pf     *prefetcher // nil without Params.Has
	direct *direct     // nil without Params.Host and Params.Has
	topic  *pubsub.Topic
	ps     *pubsub.PubSub
	bc     *broadcaster
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	releaseOnce sync.Once // Release (Params.Hold)

	// recovery after an unclean stop (recover.go)
	store    ds.Batching
	ns       ds.Key
	dag      ipld.DAGService
	has      func(context.Context, cid.Cid) (bool, error)
	scan     bool         // a scan for holes was due at open
	scanDone atomic.Bool  // it found none left
	unmerged atomic.Int64 // holes not merged yet

}

// Open starts a replica. Every protocol the DAG service needs (bitswap) must
// already be running on the host, and peers should connect only afterwards:
// bitswap learns of peers from connection events.
func Open(store ds.Batching, dag ipld.DAGService, ps *pubsub.PubSub, p Params) (*Replica, error) {
	if p.Namespace.String() == "/" || p.Topic == "" {
		return nil, errors.New("crdt: Namespace and Topic are required")
	}
	if p.RebroadcastInterval == 0 {
		p.RebroadcastInterval = 2 * time.Second
	}
	if p.MaxBatchDeltaSize == 0 {
		p.MaxBatchDeltaSize = 1 << 20
	}
	if p.Workers == 0 {
		p.Workers = 5
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	guard := newHeadsGuard(p)
	if err := ps.RegisterTopicValidator(p.Topic, guard.validate); err != nil {
		return nil, fmt.Errorf("crdt: validator for %s: %w", p.Topic, err)
	}
	topic, err := ps.Join(p.Topic)
	if err != nil {
		_ = ps.UnregisterTopicValidator(p.Topic)
		return nil, fmt.Errorf("crdt: join %s: %w", p.Topic, err)
	}
	sub, err := topic.Subscribe(pubsub.WithBufferSize(256))
	if err != nil {
		_ = topic.Close()
		_ = ps.UnregisterTopicValidator(p.Topic)
		return nil, fmt.Errorf("crdt: subscribe %s: %w", p.Topic, err)
	}
	events, err := topic.EventHandler()
	if err != nil {
		sub.Cancel()
		_ = topic.Close()
		_ = ps.UnregisterTopicValidator(p.Topic)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replica{topic: topic, ps: ps, log: p.Logger, cancel: cancel, store: store, ns: p.Namespace, dag: dag, has: p.Has}
	scan, err := r.markOpen(ctx)
	if err != nil {
		cancel()
		events.Cancel()
		sub.Cancel()
		_ = topic.Close()
		_ = ps.UnregisterTopicValidator(p.Topic)
		return nil, fmt.Errorf("crdt: %w", err)
	}
	r.scan = scan && p.Has != nil
	r.bc = &broadcaster{ctx: ctx, topic: topic, sub: sub, key: p.Key}
	if p.Hold {
		r.bc.hold = make(chan struct{})
	}
	var check *checker
	crdtDAG := dag
	if p.CheckEntry != nil || p.Immutable {
		check = newChecker(p, store)
		crdtDAG = checked(dag, check)
	}
	if p.Has != nil {
		r.bc.recipes = newRecipeWriter(dag, p.Has)
		r.pf = newPrefetcher(dag, p.Has, check, p.Logger)
		r.pf.slow, r.pf.slowAfter = p.OnSlowFetch, cmp.Or(p.SlowFetch, 5*time.Second)
		r.pf.value, r.pf.add = p.Value, dag.Add
		r.bc.ready = r.pf.out
		if p.Host != nil {
			r.direct = newDirect(p.Host, p.Topic, guard, p.Logger)
			r.direct.topic = topic.ListPeers
			r.direct.links = func(c cid.Cid) []cid.Cid { return localLinks(ctx, dag, p.Has, c) }
			r.pf.relay, r.pf.heard = r.direct.relay, r.direct.heard
		}
		r.pf.start(ctx, &r.wg, sub)
		crdtDAG = walked(crdtDAG, r.pf) // walk fetches wait walkFetch, not 20 s (walk.go)
		if r.direct != nil {
			r.wg.Add(2)
			go r.pf.readDirect(ctx, &r.wg, r.direct.in)
			go r.direct.relayLoop(ctx, &r.wg, r.bc.Broadcast)
		}
	}

	opts := dscrdt.DefaultOptions()
	opts.Logger = logAdapter{p.Logger}
	opts.RebroadcastInterval = p.RebroadcastInterval
	opts.MaxBatchDeltaSize = p.MaxBatchDeltaSize
	opts.NumWorkers = p.Workers
	opts.DAGSyncerTimeout = 20 * time.Second // a block only a departed peer had fails here, and is retried by the repair walk
	opts.RepairInterval = 10 * time.Second   // walks the DAG only when a fetch failed and marked the store dirty
	if p.Has != nil {
		opts.RepairInterval = 0 // repairLoop instead (recover.go)
	}
	if p.PutHook != nil {
		opts.PutHook = p.PutHook
	}
	d, err := dscrdt.New(store, p.Namespace, crdtDAG, r.bc, opts)
	if check != nil {
		if err != nil {
			check.start(nil)
		} else {
			check.start(d)
		}
	}
	if err != nil {
		if r.direct != nil {
			r.direct.close()
		}
		cancel()
		r.wg.Wait()
		events.Cancel()
		sub.Cancel()
		_ = topic.Close()
		_ = ps.UnregisterTopicValidator(p.Topic)
		return nil, fmt.Errorf("crdt: %w", err)
	}
	r.Datastore = d
	if r.direct != nil {
		p.Host.SetStreamHandler(r.direct.proto, r.direct.handle) // once r.Datastore is set: relays read it
	}
	r.wg.Add(1)
	go r.announceOnJoin(ctx, events)
	if r.scan {
		r.wg.Add(1)
		go r.recover(ctx)
	}
	if p.Has != nil {
		r.wg.Add(1)
		go r.repairLoop(ctx, cmp.Or(p.RepairEvery, 10*time.Second))
	}
	return r, nil
}

// announceOnJoin announces the heads each time a peer joins the topic. A
// burst of joins (a partition healing) is coalesced into one announcement
// 50 ms after the last join, so that every peer of the burst is in the topic
// when it goes out; a steady trickle still gets one at least every 500 ms.
// With Params.Host the announcement goes to the peers that joined alone,
// each on a stream (see direct.go).
func (r *Replica) announceOnJoin(ctx context.Context, events *pubsub.TopicEventHandler) {
	defer r.wg.Done()
	defer events.Cancel()
	joins := make(chan peer.ID, 64)
	r.wg.Add(1)
	go func() { // NextPeerEvent blocks; this goroutine only forwards joins
		defer r.wg.Done()
		for {
			ev, err := events.NextPeerEvent(ctx)
			if err != nil {
				return
			}
			if ev.Type != pubsub.PeerJoin {
				continue
			}
			select {
			case joins <- ev.Peer:
			case <-ctx.Done():
				return
			}
		}
	}()
	const quiet, most = 50 * time.Millisecond, 500 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // first join not yet announced
	var joined []peer.ID
	seen := map[peer.ID]bool{}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case p := <-joins:
			if first.IsZero() {
				first = time.Now()
			}
			if !seen[p] {
				seen[p] = true
				joined = append(joined, p)
			}
			timer.Reset(min(quiet, time.Until(first.Add(most))))
		case <-timer.C:
			first = time.Time{}
			to := joined
			joined, seen = nil, map[peer.ID]bool{}
			if err := r.announceTo(ctx, to); err != nil && ctx.Err() == nil {
				r.log.Debug("crdt: announce heads", "err", err)
			}
		}
	}
}

// announceTo sends the current heads to peers on streams, or, without
// Params.Host, broadcasts them.
func (r *Replica) announceTo(ctx context.Context, peers []peer.ID) error {
	if r.direct == nil {
		return r.Announce(ctx)
	}
	b, err := r.headsMessage(ctx)
	if err != nil || b == nil {
		return err
	}
	r.direct.send(ctx, &r.wg, peers, b, func() {
		if err := r.Announce(ctx); err != nil && ctx.Err() == nil {
			r.log.Debug("crdt: announce heads", "err", err)
		}
	})
	return nil
}

// headsMessage encodes the current heads as go-ds-crdt announces them
// (nil: there are none).
func (r *Replica) headsMessage(ctx context.Context) ([]byte, error) {
	heads := r.InternalStats(ctx).Heads
	if len(heads) == 0 {
		return nil, nil
	}
	return encodeHeads(heads)
}

// encodeHeads encodes heads as go-ds-crdt announces them.
func encodeHeads(heads []cid.Cid) ([]byte, error) {
	var msg pb.CRDTBroadcast
	for _, c := range heads {
		msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
	}
	return proto.Marshal(&msg)
}

// Announce broadcasts the current DAG heads now.
func (r *Replica) Announce(ctx context.Context) error {
	b, err := r.headsMessage(ctx)
	if err != nil || b == nil {
		return err
	}
	return r.bc.Broadcast(ctx, b)
}

// HeadFetches counts announced heads whose block could not be fetched
// (given up after retries) and heads dropped because too many waited.
func (r *Replica) HeadFetches() (failed, dropped int64) {
	if r.pf == nil {
		return 0, 0
	}
	return r.pf.failed.Load(), r.pf.dropped.Load()
}

// Recipes counts announced heads by how their block came (see recipe.go):
// all zero without Params.Has.
func (r *Replica) Recipes() RecipeStats {
	if r.pf == nil {
		return RecipeStats{}
	}
	return r.pf.counts.stats()
}

// localLinks returns the blocks the local block c links (none when c is
// not local).
func localLinks(ctx context.Context, dag ipld.DAGService, has func(context.Context, cid.Cid) (bool, error), c cid.Cid) []cid.Cid {
	if ok, err := has(ctx, c); err != nil || !ok {
		return nil
	}
	nd, err := dag.Get(ctx, c)
	if err != nil {
		return nil
	}
	out := make([]cid.Cid, 0, len(nd.Links()))
	for _, l := range nd.Links() {
		out = append(out, l.Cid)
	}
	return out
}

// Heads is the number of DAG heads.
func (r *Replica) Heads(ctx context.Context) int { return len(r.InternalStats(ctx).Heads) }

// Close stops the replica: its goroutines, the go-ds-crdt store and the
// topic. It does not close the underlying store. Idempotent.
func (r *Replica) Close() error {
	var err error
	r.once.Do(func() {
		walking := r.bc.busy.Load()
		if r.direct != nil {
			r.direct.close()
		}
		r.cancel()
		r.wg.Wait()
		err = r.Datastore.Close()
		if !walking && (!r.scan || r.scanDone.Load()) {
			// A clean stop with no walk cut short (go-ds-crdt drops a
			// walk's queued blocks at its Close without a dirty mark).
			if derr := r.store.Delete(context.Background(), r.openKey()); derr == nil {
				_ = r.store.Sync(context.Background(), r.openKey())
			}
		}
		r.bc.sub.Cancel()
		_ = r.ps.UnregisterTopicValidator(r.topic.String())
		if cerr := r.topic.Close(); err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = cerr
		}
	})
	return err
}

// broadcaster implements go-ds-crdt's Broadcaster on a topic we own, so that
// we can also watch the topic's peer events.
type broadcaster struct {
	ctx   context.Context
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	ready <-chan []byte  // from the prefetcher, which reads sub; nil: read sub here
	key   crypto.PrivKey // seals announcements when set (Params.Key)
	// recipes adds the recipes of new heads to announcements (nil: none).
	recipes *recipeWriter
	// busy is true from the moment Next hands go-ds-crdt an announcement
	// until it asks for the next one: it is walking that announcement's
	// heads.
	busy atomic.Bool
	// hold, when not nil, keeps announcements from go-ds-crdt until it is
	// closed (Params.Hold, Replica.Release).
	hold chan struct{}
}

func (b *broadcaster) Broadcast(ctx context.Context, data []byte) error {
	if b.recipes != nil {
		data = b.recipes.attach(ctx, data)
	}
	if b.key != nil {
		var err error
		if data, err = seal.Seal(b.key, b.topic.String(), data); err != nil {
			return err
		}
	}
	return b.topic.Publish(ctx, data)
}

func (b *broadcaster) Next(ctx context.Context) ([]byte, error) {
	b.busy.Store(false)
	data, err := b.next(ctx)
	if err == nil {
		b.busy.Store(true)
	}
	return data, err
}

func (b *broadcaster) next(ctx context.Context) ([]byte, error) {
	if b.ctx.Err() != nil {
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	ctx, cancel := mergeCancel(ctx, b.ctx)
	defer cancel()
	if b.hold != nil {
		select {
		case <-b.hold:
		case <-ctx.Done():
			return nil, dscrdt.ErrNoMoreBroadcast
		}
	}
	if b.ready != nil {
		select {
		case data := <-b.ready:
			return data, nil
		case <-ctx.Done():
			return nil, dscrdt.ErrNoMoreBroadcast
		}
	}
	msg, err := b.sub.Next(ctx)
	if err != nil {
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	return announced(msg).data, nil
}

// mergeCancel returns a context done when either a or b is.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

// logAdapter gives go-ds-crdt the logging.StandardLogger it wants.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Debug(args ...any)            { a.l.Debug(fmt.Sprint(args...)) }
func (a logAdapter) Debugf(f string, args ...any) { a.l.Debug(fmt.Sprintf(f, args...)) }
func (a logAdapter) Error(args ...any)            { a.l.Error(fmt.Sprint(args...)) }
func (a logAdapter) Errorf(f string, args ...any) { a.l.Error(fmt.Sprintf(f, args...)) }
func (a logAdapter) Fatal(args ...any)            { a.l.Error(fmt.Sprint(args...)) }
func (a logAdapter) Fatalf(f string, args ...any) { a.l.Error(fmt.Sprintf(f, args...)) }
func (a logAdapter) Info(args ...any)             { a.l.Debug(fmt.Sprint(args...)) }
func (a logAdapter) Infof(f string, args ...any)  { a.l.Debug(fmt.Sprintf(f, args...)) }
func (a logAdapter) Panic(args ...any)            { a.l.Error(fmt.Sprint(args...)) }
func (a logAdapter) Panicf(f string, args ...any) { a.l.Error(fmt.Sprintf(f, args...)) }
func (a logAdapter) Warn(args ...any)             { a.warn(fmt.Sprint(args...)) }
func (a logAdapter) Warnf(f string, args ...any)  { a.warn(fmt.Sprintf(f, args...)) }

// warn logs go-ds-crdt's warnings, except the one it gives for every batch
// larger than MaxBatchDeltaSize: a journal batch of thousands of signals
// is meant to be split into several deltas (debug).
func (a logAdapter) warn(msg string) {
	if strings.HasPrefix(msg, "delta size over MaxBatchDeltaSize") {
		a.l.Debug(msg)
		return
	}
	a.l.Warn(msg)
}

// err logs go-ds-crdt's errors, except the ones it reports for work cut
// short by Close, which are expected.
func (a logAdapter) err(msg string) {
	if strings.Contains(msg, context.Canceled.Error()) {
		a.l.Debug(msg)
		return
	}
	a.l.Error(msg)
}
