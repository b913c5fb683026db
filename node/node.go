package node

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pebblebloom "github.com/cockroachdb/pebble/v2/bloom"
	ipfslite "github.com/hsanjuan/ipfs-lite"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/internal/crashhook"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/router"
)

// ErrClosed is returned by calls on a closed node.
var ErrClosed = errors.New("node: closed")

var (
	identityKey = ds.NewKey("/signalmesh/identity")
	dsRoot      = ds.NewKey("/")
)

// Node is a signalmesh peer. Create it with New and stop it with Close.
// Its methods are safe for concurrent use.
type Node struct {
	cfg    Config
	p      Params
	log    *slog.Logger
	self   peer.ID
	key    crypto.PrivKey // signs what the node publishes
	ver    *verifier      // checks what others signed
	vetted vetted         // journal entries checkEntry decoded and verified, for the put hook

	ctx      context.Context // cancelled first by Close; the node's own goroutines watch it
	cancel   context.CancelFunc
	netCtx   context.Context // GossipSub and the DAG service; ended after the journal closes
	netEnd   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	closeErr error

	store ds.Batching
	// subStore holds the subscription set's CRDT state apart from the
	// journal's in an in-memory node (nil: in store): a map datastore
	// answers a prefix query by reading every key it holds, and the
	// registrar reads the whole set every Lease/8 (with a journal of
	// 20,000 signals, that was a quarter of a partition heal's CPU).
	subStore ds.Batching
	unlock   func() // releases the DataDir lock
	host     host.Host
	ps       *pubsub.PubSub
	topic    *pubsub.Topic
	sigTopic string // its name
	// gossipWindow is how far back GossipSub's gossip (IHAVE) reaches:
	// HistoryGossip heartbeats (inspectRPC).
	gossipWindow time.Duration
	connSince    connSince // since when each peer has been connected (inspectRPC)
	sub          *pubsub.Subscription

	ackTopic   *pubsub.Topic
	ackSub     *pubsub.Subscription
	ackQ       chan ackWant // put hook and asks → acker
	quorum     quorum
	dag        *ipfslite.Peer
	repl       *crdt.Replica // the journal
	snapJoin   bool          // the journal is held for a snapshot join (Config.SnapshotJoin)
	snapJoined bool          // and one was written
	snapValues int           // entries it brought
	snaps      snapServer    // snapshots this node serves
	goneMu     sync.Mutex
	gone       *gone         // ids whose signals left the journal (nil: none yet; prune.go)
	chunkMu    sync.Mutex    // one putChunked at a time (it alternates slots; checkpoint.go)
	subset     *crdt.Replica // the mesh-wide subscription set
	reg        *registry     // this node's view of it
	jr         *journal.Journal
	index      ds.Batching // the journal's id index: local, written by the put hook and by pulls
	indexOK    bool        // the index is complete: Close marks it so for the next start
	indexBad   atomic.Bool // an index write failed: it is not complete
	indexing   bool        // pulls write index entries: after a crash (see restore)
	refusing   atomic.Bool // the core refused a signal for lack of room and has not got room back

	idxMu       sync.Mutex              // guards idxPending and idxShown
	idxPending  []journal.Entry         // index entries queued by the put hook (flushIndex)
	idxShown    map[string][]shownEntry // queued or being written, by id directory: read by idxView
	idxQueued   uint64                  // index entries queued so far
	idxFlushed  uint64                  // of which flushIndex took the first idxFlushed
	indexPrefix string                  // the index's namespace in store (index), as a key prefix
	memIdx      *journal.MemIndex       // the index of an in-memory node (then index, idxPending and idxShown are unused)
	closing     atomic.Bool             // Close has begun: Publish refuses
	crash       atomic.Bool             // tests: Close leaves what a kill -9 would
	handed      handOff                 // what Close waits for peers to hold
	mdns        mdns.Service
	rm          *rcmgrCloser // the host's resource manager (the host does not close it)
	nat         nat

	leaseTopic *pubsub.Topic // lease renewals of the subscription set (leases.go)
	leaseSub   *pubsub.Subscription
	leaseJoins *pubsub.TopicEventHandler

	peersTopic *pubsub.Topic // discovery announcements
	peersSub   *pubsub.Subscription
	peersJoins *pubsub.TopicEventHandler
	sigJoins   *pubsub.TopicEventHandler // the signals topic's joins and leaves (relink.go)

	publish     PublishFunc // publishCore inside Config.PublishMiddleware
	subs        *router.Router[*Subscription]
	subMu       sync.Mutex     // orders Subscribe against Close
	subWG       sync.WaitGroup // subscription goroutines
	clogs       []*cursorLog   // named subscriptions' cursor logs (guarded by subMu)
	storeClosed bool           // Close is done with subscriptions and closes the store (guarded by subMu)

	inbox     chan inbound              // gossip reader and CRDT put hook → loop
	reqs      chan func()               // closures run on the loop
	unblock   chan struct{}             // closed when Close begins: the loop waits for no OverflowBlock subscription
	commitQ   chan commitReq            // Publish → committer
	journalQ  chan outboxed             // committer → journaler
	gossipQ   chan [][]byte             // committer → gossiper: wire forms
	adoptQ    chan []*signalmesh.Signal // loop → adopter: delivered signals to journal here (full: wait for the next tick)
	live      bool                      // New started the node's goroutines
	ownSeq    uint64                    // the last sequence number this node used, at start
	recent    *idSet                    // ids the committer stamped lately (owned by the committer)
	seen      *bloom                    // ids that reached the journal (concurrent)
	tops      tops                      // highest journaled sequence per origin (put hook; concurrent)
	settled   settled                   // per origin, delivered up to here without a gap (loop; read by validate)
	pulled    int64                     // journal entries pullStep read (loop; the start before it)
	startRead int64                     // of which the start read (tests: a clean reopen reads none)
	reopen    *reopenState              // the record a clean Close left, until restore uses it
	pending   []outboxed                // outbox entries found at start, journaled first
	orphans   []*signalmesh.Signal      // the last process delivered them, nobody journaled them: adopted first

	selfRef      string                    // causal.PeerRef(self)
	largestStamp string                    // the longest stamp the committer can write, for Publish to validate with
	base         atomic.Pointer[stampBase] // published by the loop after each release
	lamport      uint64                    // the last Lamport time stamped (owned by the committer)
	m            metrics
	scores       atomic.Pointer[map[peer.ID]float64] // GossipSub peer scores, refreshed every second
	known        knownPeers                          // mesh members seen, for a node left alone (redial.go)
	drops        peerTimes                           // when peers were last disconnected, for discovery (discover.go)
	dropWatch    *network.NotifyBundle               // watchDrops' notifiee (a test unregisters it)
	linked       linked                              // peers connected directly at their last announcement (discover.go)
	announced    peerTimes                           // when each peer's announcement last arrived (pace.go)
	renewed      peerTimes                           // when each peer's fresh lease message last arrived (pace.go)
	helloed      peerTimes                           // when each peer's Hello was last answered (leases.go)
	writers      writers                             // peers GossipSub or bitswap may have stopped sending to (relink.go)
	dialing      dialing                             // the discoverer's dials in flight (discover.go)
	penalties    penalties                           // GossipSub application-specific scores (score.go)

	floorSet *bloom // origins with a floor record (origins.go)

	// owned by the loop goroutine
	core         *causal.Core[*signalmesh.Signal]
	origins      map[string]string       // peer ref -> peer id, of the origins seen (but those that left: origins.go)
	fresh        *freshSet               // delivered, journal entry not seen yet
	journalRefs  map[causal.Ref]struct{} // offered from the journal, waiting in the core
	journalRef   causal.Ref              // the one offerJournaled is offering (zero: none)
	freshDel     []causal.Ref            // to clear from the durable fresh area at the next tick
	volatile     bool                    // the store is the in-memory default: nothing outlives the process, so no durable fresh area
	pulling      bool                    // a pull from the journal is under way
	pullWanted   bool                    // the core refused a signal for lack of room: pull at the next tick
	heal         healClock               // times waiting episodes (with histograms)
	waitingSince time.Time               // since when the buffer has been non-empty
	reported     bool                    // the current wait was reported
}

// New starts a node: its store, identity, libp2p host, GossipSub, DAG
// service and CRDT journal, then its own goroutines, then dials Bootstrap.
// ctx bounds only the start-up; the node runs until Close.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, p: cfg.Params.withDefaults(), log: cfg.Logger}
	if n.log == nil {
		n.log = slog.Default()
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.netCtx, n.netEnd = context.WithCancel(context.Background())
	n.subs = router.New[*Subscription]()
	n.ver = newVerifier(cfg.Mesh)
	n.publish = n.publishCore
	for i := len(cfg.PublishMiddleware) - 1; i >= 0; i-- {
		n.publish = cfg.PublishMiddleware[i](n.publish)
	}
	n.inbox = make(chan inbound, 1024)
	n.reqs = make(chan func())
	n.unblock = make(chan struct{})
	n.commitQ = make(chan commitReq, n.p.CommitQueue)
	n.journalQ = make(chan outboxed, 64)
	n.recent = newIDSet(1 << 16)
	n.base.Store(&stampBase{})
	n.seen = newBloom(1 << 24) // 2 MiB
	n.tops.m = map[string]uint64{}
	n.gossipQ = make(chan [][]byte, 256)
	n.ackQ = make(chan ackWant, 65536)
	n.adoptQ = make(chan []*signalmesh.Signal, 4)
	n.quorum.init()
	n.largestStamp = largestStamp(n.p.MaxDeps)
	n.m.links = n.linkCounts
	if err := n.m.init(cfg.Registerer); err != nil {
		n.cancel()
		n.netEnd()
		return nil, err
	}
	if n.m.hist != nil {
		n.publish = n.m.hist.timePublish(n.publish)
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if err := n.openStore(); err != nil {
		return nil, err
	}
	// The reopen state is taken (read and deleted, synced) before anything
	// can write to the journal: a crash from here on leaves none.
	if n.reopen, err = n.readState(ctx); err != nil {
		return nil, fmt.Errorf("node: read store: %w", err)
	}
	if n.reopen == nil { // not a clean stop: the last checkpoint, if any
		if n.reopen, err = n.readCheckpoint(ctx); err != nil {
			return nil, fmt.Errorf("node: read store: %w", err)
		}
	}
	if err := n.startHost(ctx); err != nil {
		return nil, err
	}
	if err := n.startPubSub(); err != nil {
		return nil, err
	}
	if err := n.startNAT(); err != nil {
		return nil, err
	}
	if cfg.SnapshotJoin && len(cfg.Bootstrap) > 0 && n.reopen == nil {
		if n.snapJoin, err = n.journalEmpty(ctx); err != nil {
			return nil, fmt.Errorf("node: read store: %w", err)
		}
	}
	if err := n.startJournal(ctx); err != nil {
		return nil, err
	}
	if n.snapJoin {
		n.snapJoined = n.joinFromSnapshot(ctx)
	}
	n.repl.Release()
	if err := n.restore(ctx); err != nil {
		return nil, err
	}
	n.snaps.slots = make(chan struct{}, 2)
	n.host.SetStreamHandler(n.snapshotProto(), n.serveSnapshot)
	n.live = true // the loop runs: Close may ask it for what to adopt
	n.wg.Add(15)
	go n.registrar()
	go n.readLeases()
	go n.watchLeaseJoins()
	go n.watchIdentify()
	go n.relayed()
	go n.relinker()
	go n.watchTopicLeaves(n.sigJoins)
	go n.adopter()
	go n.acker()
	go n.readAcks()
	go n.gossiper()
	go n.loop()
	go n.committer()
	go n.journaler()
	go n.readGossip()
	if every := n.pruneEvery(); every > 0 {
		n.wg.Add(1)
		go n.pruner(every)
	}
	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.host, "signalmesh-"+cfg.Mesh, &mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			return nil, fmt.Errorf("node: mdns: %w", err)
		}
	}
	if n.p.Discover > 0 {
		n.watchDrops()
		n.wg.Add(2)
		go n.announcer(n.peersJoins)
		go n.discoverer()
	}
	for _, ai := range cfg.Bootstrap {
		n.host.ConnManager().Protect(ai.ID, protectBootstrap)
	}
	for _, ai := range cfg.Relays {
		n.host.ConnManager().Protect(ai.ID, protectRelay)
	}
	for _, ai := range cfg.Bootstrap {
		if err := n.host.Connect(ctx, ai); err != nil {
			n.log.Warn("node: bootstrap peer unreachable", "peer", ai.ID, "err", err)
		}
	}
	n.wg.Add(1)
	go n.redialer()
	if len(cfg.Relays) > 0 {
		n.wg.Add(1)
		go n.reserver()
	}
	return n, nil
}

// testCrashClose, when set (tests only), makes Close leave what a kill -9
// would: no adoption, no hand-off.
var testCrashClose atomic.Bool

func init() {
	crashhook.Close = func(v any) error {
		n := v.(*Node)
		n.crash.Store(true)
		return n.Close()
	}
}

// crashing reports whether Close is to leave what a kill -9 would (tests
// only: testCrashClose, or this node's crash flag).
func (n *Node) crashing() bool { return testCrashClose.Load() || n.crash.Load() }

// testWrapStore, when set (tests only), wraps every node's store.
var testWrapStore func(ds.Batching) ds.Batching

// testRepairEvery, when set by a test before starting nodes, is how often
// their journals repair a store go-ds-crdt marked dirty (crdt.Params).
var testRepairEvery time.Duration

func (n *Node) openStore() error {
	if err := n.openStoreRaw(); err != nil {
		return err
	}
	if testWrapStore != nil {
		n.store = testWrapStore(n.store)
	}
	return nil
}

func (n *Node) openStoreRaw() error {
	if n.cfg.Datastore != nil {
		return n.useStore()
	}
	if n.cfg.DataDir == "" {
		n.volatile = true
		n.store = dssync.MutexWrap(ds.NewMapDatastore())
		n.subStore = dssync.MutexWrap(ds.NewMapDatastore())
		return nil
	}
	unlock, err := lockDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	// Bloom filters on every level: go-ds-crdt asks for keys that are not
	// there on every merge (tombstones, priorities of new keys). Without a
	// filter such a lookup reads and decompresses the data block where the
	// key would be, whatever it holds (with 4 MiB checkpoints in one value,
	// writing a 100,000-signal journal while pruning took 109 s without
	// filters and 24 s with; large records are now chunked besides, see
	// putChunked: 4.5 s, against 3.9 s without pruning).
	popts := &pebble.Options{}
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = pebblebloom.FilterPolicy(10)
	}
	st, err := pebbleds.NewDatastore(filepath.Join(n.cfg.DataDir, "store"), pebbleds.WithCacheSize(int64(n.p.StoreCache)), pebbleds.WithPebbleOpts(popts))
	if err != nil {
		unlock()
		return fmt.Errorf("node: open store in %s: %w", n.cfg.DataDir, err)
	}
	n.unlock = unlock
	n.store = st
	return nil
}

// identity loads the node's Ed25519 key from the store, or makes and stores one.
func (n *Node) identity(ctx context.Context) (crypto.PrivKey, error) {
	b, err := n.store.Get(ctx, identityKey)
	if err == nil {
		return crypto.UnmarshalPrivateKey(b)
	}
	if !errors.Is(err, ds.ErrNotFound) {
		return nil, err
	}
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	if b, err = crypto.MarshalPrivateKey(priv); err != nil {
		return nil, err
	}
	if err := n.store.Put(ctx, identityKey, b); err != nil {
		return nil, err
	}
	return priv, n.store.Sync(ctx, identityKey)
}

func (n *Node) startHost(ctx context.Context) error {
	priv, err := n.identity(ctx)
	if err != nil {
		return fmt.Errorf("node: identity: %w", err)
	}
	addrs := n.cfg.ListenAddrs
	if len(addrs) == 0 {
		addrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	limits, rm, err := limitOptions(n.p)
	if err != nil {
		return fmt.Errorf("node: limits: %w", err)
	}
	n.rm = rm
	// The relay transport is on (libp2p's default): the node dials peers
	// through relays; the relay service and hole punching are the node's
	// own (startNAT).
	opts := append([]libp2p.Option{libp2p.Identity(priv),
		libp2p.ConnectionGater(&gater{allow: n.cfg.Allow, next: n.cfg.Gater})}, limits...)
	if len(n.cfg.AnnounceAddrs) > 0 {
		announce := make([]ma.Multiaddr, 0, len(n.cfg.AnnounceAddrs))
		for _, a := range n.cfg.AnnounceAddrs {
			m, err := ma.NewMultiaddr(a)
			if err != nil {
				return fmt.Errorf("node: announce address %q: %w", a, err)
			}
			announce = append(announce, m)
		}
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	if n.cfg.PSK != nil {
		var tcpOnly []string
		for _, a := range addrs {
			if !strings.Contains(a, "/quic") && !strings.Contains(a, "/webtransport") {
				tcpOnly = append(tcpOnly, a)
			}
		}
		addrs = tcpOnly
		opts = append(opts, libp2p.PrivateNetwork(n.cfg.PSK), libp2p.Transport(tcp.NewTCPTransport))
	}
	opts = append(opts, libp2p.ListenAddrStrings(addrs...))
	if n.cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(n.cfg.Registerer))
	}
	opts = append(opts, n.cfg.HostOptions...)
	h, err := libp2p.New(opts...)
	if err != nil {
		return fmt.Errorf("node: libp2p host: %w", err)
	}
	n.host, n.self, n.key = h, h.ID(), priv
	if len(n.cfg.Allow) > 0 {
		n.ver.allow = map[string]bool{n.self.String(): true}
		for _, p := range n.cfg.Allow {
			n.ver.allow[p.String()] = true
		}
	}
	return nil
}

func (n *Node) topicName(kind string) string { return "/signalmesh/" + n.cfg.Mesh + "/" + kind }

func (n *Node) startPubSub() error {
	sigTopic := n.topicName("signals")
	gp := GossipSubParams(n.p)
	n.sigTopic, n.gossipWindow = sigTopic, time.Duration(gp.HistoryGossip)*gp.HeartbeatInterval
	n.watchLinks()
	score, thresholds := n.peerScore(sigTopic, n.topicName("acks"), n.topicName("peers"), n.topicName("journal"), n.topicName("subscriptions"),
		n.topicName("leases"))
	ps, err := pubsub.NewGossipSub(n.netCtx, n.host,
		pubsub.WithPeerScore(score, thresholds),
		pubsub.WithPeerScoreInspect(func(m map[peer.ID]float64) { n.scores.Store(&m) }, time.Second),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), // signals and control messages are signed by their authors (sealed.go)
		pubsub.WithNoAuthor(),
		pubsub.WithFloodPublish(true),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithValidateQueueSize(1024),
		pubsub.WithRawTracer(tracer{m: &n.m, topic: sigTopic, writers: &n.writers}),
		pubsub.WithPeerExchange(true),
		pubsub.WithGossipSubParams(gp),
		pubsub.WithAppSpecificRpcInspector(n.inspectRPC),
	)
	if err != nil {
		return fmt.Errorf("node: gossipsub: %w", err)
	}
	n.ps = ps
	if err := ps.RegisterTopicValidator(sigTopic, n.validate); err != nil {
		return err
	}
	if n.topic, err = ps.Join(sigTopic); err != nil {
		return err
	}
	if n.sub, err = n.topic.Subscribe(pubsub.WithBufferSize(4096)); err != nil {
		return err
	}
	if n.sigJoins, err = n.topic.EventHandler(); err != nil {
		return err
	}
	ackTopic := n.topicName("acks")
	if err := ps.RegisterTopicValidator(ackTopic, n.validateAck); err != nil {
		return err
	}
	if n.ackTopic, err = ps.Join(ackTopic); err != nil {
		return err
	}
	if n.ackSub, err = n.ackTopic.Subscribe(pubsub.WithBufferSize(1024)); err != nil {
		return err
	}
	peersTopic := n.topicName("peers")
	if err := ps.RegisterTopicValidator(peersTopic, n.validatePeers); err != nil {
		return err
	}
	if n.peersTopic, err = ps.Join(peersTopic); err != nil {
		return err
	}
	if n.peersSub, err = n.peersTopic.Subscribe(pubsub.WithBufferSize(256)); err != nil {
		return err
	}
	n.peersJoins, err = n.peersTopic.EventHandler()
	return err
}

func (n *Node) startJournal(ctx context.Context) error {
	dag, err := ipfslite.New(n.netCtx, n.store, nil, n.host, nil, &ipfslite.Config{ReprovideInterval: -1})
	if err != nil {
		return fmt.Errorf("node: dag service: %w", err)
	}
	n.dag = dag
	p := crdt.Params{
		Namespace:           ds.NewKey("/mesh/" + n.cfg.Mesh + "/journal"),
		Topic:               n.topicName("journal"),
		RebroadcastInterval: n.p.Rebroadcast,
		RepairEvery:         testRepairEvery, // 0: the replica's default
		PutHook:             n.putHook,
		Has:                 dag.HasBlock,
		Value:               n.vetted.value,
		Self:                n.self,
		Key:                 n.key,
		OnReject:            n.m.reject,
		OnSlowFetch:         n.writers.slowFetch,
		Host:                n.host,
		Hold:                n.snapJoin,
		Logger:              n.log,
	}
	if len(n.cfg.Allow) > 0 {
		p.Member = (&gater{allow: append([]peer.ID{n.self}, n.cfg.Allow...)}).allowed
	}
	if !testNoVerify {
		p.CheckEntry, p.Immutable, p.OnRefuse = n.checkEntry, true, n.refusedBlock
	}
	if n.volatile {
		// Nothing to keep across a restart: the index is a map (a
		// MapDatastore would visit every key of the store for each
		// lookup by id). Made, as the store index's prefix, before the
		// replica, whose put hook writes to it.
		n.memIdx = journal.NewMemIndex()
	}
	n.indexPrefix = ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/index").String()
	n.index = namespace.Wrap(n.store, ds.NewKey(n.indexPrefix))
	n.repl, err = crdt.Open(n.store, dag, n.ps, p)
	if err != nil {
		return err
	}
	if n.memIdx != nil {
		n.jr = journal.NewWithMemIndex(n.repl, n.memIdx)
	} else {
		n.jr = journal.NewWithIndex(n.repl, idxView{n})
	}
	n.jr.SetRetention(n.cfg.Retention, nil)
	return n.startSubscriptionSet()
}

// restore rebuilds the causal state from the journal and the outbox: what
// is there at start counts as delivered (new subscriptions start now; named
// ones resume from their cursor). Outbox entries, durable but not yet in the
// CRDT journal when the node last stopped, are journaled first thing. A
// journal that cannot be read fails the start: a node that restarted its
// sequence numbers would have its next signals dropped as duplicates.
func (n *Node) restore(ctx context.Context) error {
	var err error
	n.selfRef = causal.PeerRef(n.self.String())
	n.origins = map[string]string{n.selfRef: n.self.String()}
	n.fresh = newFreshSet(1<<16, 2*n.p.JournalBatch)
	if ret := n.cfg.Retention; len(ret) > 0 {
		n.fresh.past = func(s *signalmesh.Signal) bool { return ret.Expired(s, time.Now()) }
	}
	n.journalRefs = map[causal.Ref]struct{}{}
	if err := n.readGone(ctx); err != nil {
		return fmt.Errorf("node: read store: %w", err)
	}
	if err := n.readFloorSet(ctx); err != nil {
		return fmt.Errorf("node: read store: %w", err)
	}
	cp := causal.Params{Limit: n.p.CausalBuffer, OriginLimit: n.p.OriginBuffer, CauseWait: int64(n.p.CauseWait), DepWait: int64(n.p.DepWait)}
	if n.gone != nil || n.pruneEvery() > 0 {
		cp.Gone = n.goneSet().mayHave
	}
	cp.Recall = n.recallFloor // origins that left (origins.go)
	n.core, err = causal.New[*signalmesh.Signal](cp, n.jr)
	if err != nil {
		return err
	}
	n.core.Tick(time.Now().UnixNano()) // what the journal holds is known from now (see causal's CauseWait)
	if err := n.checkIndex(ctx); err != nil {
		return err
	}
	rec := n.reopen
	origins := n.restoreState(n.reopen, n.reopen != nil && (!n.indexing || n.reopen.checkpoint))
	n.reopen = nil
	fromCheckpoint := origins != nil && rec.checkpoint
	if origins == nil || fromCheckpoint { // no usable record, or a checkpoint: list the journal, and replay it above what is delivered
		listed, err := n.jr.Origins(ctx)
		if err != nil {
			return fmt.Errorf("node: read journal: %w", err)
		}
		if origins == nil {
			origins = listed
		}
		for o, s := range listed {
			origins[o] = max(origins[o], s)
		}
	}
	if fromCheckpoint {
		if err := n.indexFresh(ctx, rec.fresh); err != nil {
			return err
		}
	}
	for ref, seq := range origins {
		n.tops.note(ref, seq)
		n.core.Know(causal.Ref{Origin: ref, Seq: seq})
	}
	// Own signals in the journal may wait for causes that came by gossip
	// and are not journaled here yet: they count for the next sequence
	// number even though they are not delivered.
	n.ownSeq = origins[n.selfRef]
	if len(origins) > 0 && !n.snapJoin {
		n.connSince.resumed() // its peers' gossip names what it missed while down (inspectRPC)
	}
	if err := n.readDecisions(ctx); err != nil {
		return fmt.Errorf("node: read store: %w", err)
	}
	if err := n.catchUp(ctx); err != nil {
		return fmt.Errorf("node: read journal: %w", err)
	}
	n.startRead = n.pulled
	// The put hook indexes every entry that arrives (in batches, written by
	// Close at the latest), so after a clean stop, and on a fresh store,
	// pulls need not index again. After a crash they go on indexing what
	// they read for the whole run: the put hook's last batches may be lost,
	// and the replay above need not reach every entry (an origin held by a
	// missing dependency is pulled later).
	if len(origins) == 0 {
		n.indexing = false
	}
	if n.pending, err = n.readOutbox(ctx); err != nil {
		return err
	}
	if n.p.Adopt >= 0 {
		if n.orphans, err = n.readFresh(ctx); err != nil {
			return err
		}
	}
	// An orphan the last process delivered counts as delivered when the
	// core was restored from the reopen state (a signal delivered after
	// Close's adoption, say): adopted, it is a duplicate and comes live to
	// no subscription. Until then it is fresh, so that a subscription's
	// backlog (a named one behind it) has it.
	for _, s := range n.orphans {
		if m, err := journal.MetaOf(s); err == nil && n.core.DeliveredOf(m.Origin) >= m.Seq {
			n.fresh.add(m.Ref(), s, time.Now())
		}
	}
	for _, o := range n.pending {
		if m, err := journal.MetaOf(o.sigs[0]); err == nil {
			_ = n.offer(m, o.sigs[0]) // a duplicate if it reached the journal before the stop
			n.lamport = max(n.lamport, m.Lamport)
		}
		n.recent.add(identityOf(o.sigs[0]), journal.ContentDigest(o.sigs[0]), place{Origin: n.selfRef, Seq: o.first})
		n.seen.add(o.sigs[0].ID)
		n.ownSeq = max(n.ownSeq, o.first)
	}
	n.publishBase()
	n.lamport = max(n.lamport, n.base.Load().lamport)
	return nil
}

func (n *Node) cleanKey() ds.Key { return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/index-complete") }

// checkIndex decides whether the start's replay of the journal writes the
// journal's id index: only when the last run did not end with Close (the
// put hook writes an entry while go-ds-crdt merges, and the two do not
// commit together: a crash can lose entries), then clears the mark until
// the next Close. An index older than the effects index gets it first
// (checkIndexVersion).
func (n *Node) checkIndex(ctx context.Context) error {
	clean, err := n.store.Has(ctx, n.cleanKey())
	if err != nil {
		return fmt.Errorf("node: read store: %w", err)
	}
	n.indexing = !clean && n.memIdx == nil // an index in memory starts empty with the journal: the put hook adds every entry
	if err := n.checkIndexVersion(ctx); err != nil {
		return err
	}
	if err := n.store.Delete(ctx, n.cleanKey()); err != nil {
		return err
	}
	n.indexOK = true
	return n.store.Sync(ctx, n.cleanKey())
}

func (n *Node) readOutbox(ctx context.Context) ([]outboxed, error) {
	res, err := n.store.Query(ctx, query.Query{Prefix: "/signalmesh/" + n.cfg.Mesh + "/outbox"})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []outboxed
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		s, err := signalmesh.DecodeBinary(r.Value, signalmesh.Limits{})
		if err != nil {
			return nil, fmt.Errorf("node: outbox entry %s: %w", r.Key, err)
		}
		ref, seq := journal.Place(s)
		if ref != n.selfRef {
			n.log.Error("node: skipping an outbox entry that is not a signal of this peer", "key", r.Key)
			continue
		}
		out = append(out, outboxed{sigs: []*signalmesh.Signal{s}, wires: [][]byte{bytes.Clone(r.Value)}, first: seq})
	}
	slices.SortFunc(out, func(a, b outboxed) int { return cmp.Compare(a.first, b.first) })
	return out, nil
}

// Mesh is the name of the node's mesh.
func (n *Node) Mesh() string { return n.cfg.Mesh }

// ID is the node's libp2p peer id.
func (n *Node) ID() peer.ID { return n.self }

// AddrInfo is the node's id and listen addresses, for other nodes' Bootstrap or Connect.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.self, Addrs: n.host.Addrs()}
}

// Host is the node's libp2p host, for advanced use; do not close it.
func (n *Node) Host() host.Host { return n.host }

// Connect dials a peer.
func (n *Node) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	ClearDialBackoff(n.host, ai.ID)
	return n.host.Connect(ctx, ai)
}

// ClearDialBackoff forgets a host's failed dials to p, so that the next
// dial is attempted at once: after a partition heals, libp2p would
// otherwise refuse to dial a peer it failed to reach while cut ("dial
// backoff") for up to several minutes.
func ClearDialBackoff(h host.Host, p peer.ID) {
	if sw, ok := h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}

// Disconnect closes every connection to p (it may reconnect: block it with
// Config.Allow or a gater such as Blocklist to keep it away).
func (n *Node) Disconnect(p peer.ID) error { return n.host.Network().ClosePeer(p) }

// Peers lists the peers the node is connected to.
func (n *Node) Peers() []peer.ID { return n.host.Network().Peers() }

// Close stops every goroutine the node started, closes the CRDT store, the
// host and the datastore (flushing it to disk). It is idempotent and safe to
// call concurrently; every call returns the first call's error.
func (n *Node) Close() error {
	n.once.Do(func() {
		close(n.unblock) // before anything here that needs the loop
		var errs []error
		waitLeave := func() {}
		if n.live && !n.crashing() {
			waitLeave = n.leaveGroups()
		}
		n.closing.Store(true)
		n.handOff(n.adoptAll())
		n.cancel()
		n.snaps.close() // its streams end with the node's context
		n.wg.Wait()
		waitLeave() // its context over, a member still in a handler is on its way out
		n.closeWatches()
		n.closeSubscriptions()
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		if n.repl != nil {
			errs = append(errs, n.repl.Close())
		}
		if n.subset != nil {
			errs = append(errs, n.subset.Close())
		}
		if n.sub != nil {
			n.sub.Cancel()
		}
		if n.ackSub != nil {
			n.ackSub.Cancel()
		}
		if n.ackTopic != nil {
			_ = n.ackTopic.Close()
		}
		if n.leaseJoins != nil {
			n.leaseJoins.Cancel()
		}
		if n.leaseSub != nil {
			n.leaseSub.Cancel()
		}
		if n.leaseTopic != nil {
			_ = n.leaseTopic.Close()
		}
		if n.peersJoins != nil {
			n.peersJoins.Cancel()
		}
		if n.sigJoins != nil {
			n.sigJoins.Cancel()
		}
		if n.peersSub != nil {
			n.peersSub.Cancel()
		}
		if n.peersTopic != nil {
			_ = n.peersTopic.Close()
		}
		if n.topic != nil {
			_ = n.topic.Close()
		}
		n.netEnd()
		if n.dag != nil {
			errs = append(errs, n.dag.BlockService().Close())
		}
		errs = append(errs, n.closeNAT())
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		n.nat.punching.Wait() // hole punches started by relayed: their service and streams are closed
		errs = append(errs, n.rm.Close())
		if n.index != nil {
			n.flushIndex() // the put hook is done (the replica is closed)
		}
		if n.store != nil {
			// The loop and the put hook are done: core and tops are final.
			// An in-memory store ends here: nothing to write.
			durable := n.cfg.DataDir != "" || n.cfg.Datastore != nil
			if durable && n.indexOK && !n.indexBad.Load() && n.live && !n.crashing() {
				errs = append(errs, n.writeState(context.Background()))
			}
			if n.indexOK && !n.indexBad.Load() { // every delivered signal is indexed
				errs = append(errs, n.store.Put(context.Background(), n.cleanKey(), nil))
			}
			errs = append(errs, n.store.Sync(context.Background(), ds.NewKey("/")))
			if n.cfg.Datastore == nil { // the caller's store is the caller's to close
				errs = append(errs, n.store.Close())
			}
		}
		if n.unlock != nil {
			n.unlock()
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// adoptAll journals, before a clean stop, every signal this node delivered
// whose journal entry has not arrived (at most a few seconds' worth): after
// the restart it is journaled here, known as delivered and findable.
// It returns the places it journaled.
func (n *Node) adoptAll() []place {
	if !n.live || n.p.Adopt < 0 || n.crashing() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sigs []*signalmesh.Signal
	if err := n.do(ctx, func() { sigs = n.fresh.take(time.Time{}, n.selfRef, 1<<20) }); err != nil || len(sigs) == 0 {
		return nil
	}
	if _, err := n.adopt(sigs); err != nil {
		n.log.Warn("node: adopt signals into the journal at close", "err", err)
		return nil
	}
	out := make([]place, len(sigs))
	for i, s := range sigs {
		out[i].Origin, out[i].Seq = journal.Place(s)
	}
	return out
}

type mdnsNotifee struct{ n *Node }

func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.self {
		return
	}
	if err := m.n.Connect(m.n.ctx, ai); err != nil {
		m.n.log.Debug("node: mdns peer unreachable", "peer", ai.ID, "err", err)
	}
}

// largestStamp is the longest stamp with up to maxDeps dependencies.
func largestStamp(maxDeps int) string {
	st := causal.Stamp{Seq: math.MaxUint64, Lamport: math.MaxUint64}
	for i := range maxDeps {
		st.Deps = append(st.Deps, causal.Ref{Origin: causal.PeerRef(fmt.Sprint(i)), Seq: math.MaxUint64})
	}
	return st.Format()
}
