package node

import (
	"errors"
	"fmt"
	ds "github.com/ipfs/go-datastore"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// Config configures a Node. The zero value, with a Mesh name, is a working
// in-memory peer listening on loopback with no peers to dial.
type Config struct {
	// Mesh names the mesh. It namespaces the GossipSub topics and the CRDT
	// keys, so two meshes on one network never mix. Required; letters,
	// digits, '-', '_' and '.'.
	Mesh string

	// DataDir holds the peer's identity, blocks, CRDT state and journal in an
	// embedded on-disk store (pebble). Empty: everything in memory, gone on
	// Close (tests, demos).
	DataDir string

	// Datastore, when set, is the store of everything DataDir would hold
	// in pebble (identity, blocks, CRDT state, journal, cursors): any
	// go-datastore Batching store, such as badger (go-ds-badger4) or
	// leveldb (go-ds-leveldb), for embedders that have one or want a
	// smaller binary footprint on a device. The caller opens it and closes
	// it after the node's Close, which syncs it but does not close it; one
	// node at a time may use it, and it must be safe for concurrent use
	// (badger and leveldb are). DataDir may still be set: it then holds
	// only the directory lock and the named subscriptions' cursor logs.
	// Nil: pebble in DataDir, or memory.
	Datastore ds.Batching

	// ListenAddrs are libp2p multiaddrs to listen on. Default: TCP and QUIC
	// on 127.0.0.1 with ports chosen by the system. Use /ip4/0.0.0.0/... to
	// accept peers from other hosts. With PSK set, QUIC addresses are
	// ignored (libp2p private networks are TCP only).
	ListenAddrs []string

	// Bootstrap peers are dialled once the node has started, and again
	// every Params.Redial while the node is not connected to them: after a
	// partition heals, or after a peer restarts, the node finds it again by
	// itself. A node with no mesh member connected also redials, every
	// Params.Redial, up to 4 of the last 32 mesh members it was connected
	// to, then of the last 32 it heard announce themselves (a node a hub
	// trimmed, or whose peers all left for a while; with Params.Discover
	// on); to keep a node apart, use Config.Gater.
	Bootstrap []peer.AddrInfo

	// SnapshotJoin makes a node whose store holds no journal join from a
	// snapshot of a Bootstrap peer's journal (the signals it still retains,
	// see Retention, and its causal state) instead of walking every journal
	// block ever written: its first start costs time in proportion to the
	// retained signals. Every signal of a snapshot is checked as one from a
	// journal block; a snapshot that fails falls back to the walk. What it
	// trusts the peer for, and what it does not give, is in snapshot.go's
	// doc. Default off.
	SnapshotJoin bool

	// RelayService makes this node a circuit relay (libp2p circuit relay
	// v2) for the mesh: a peer that cannot be reached directly (behind a
	// NAT) reserves a slot on it and is reached through it. Relayed
	// connections have no time or data limit, so they carry the mesh
	// (GossipSub and the DAG sync) until hole punching makes a direct one;
	// the relay bounds its reservations (128) and circuits (16 per peer).
	// For nodes with an address every peer can dial. Default off.
	RelayService bool

	// Relays are relay nodes (RelayService on) on which this node keeps a
	// reservation, renewed before it expires, so that peers reach it
	// through them when it is behind a NAT: its discovery announcements
	// carry its address through each relay, and its listen addresses,
	// but not the addresses its peers observed it at (its NAT's mappings,
	// which it leaves to hole punching; a node without Relays announces
	// them). They are protected from connection trims.
	//
	// Peers connected through a relay punch a direct connection (DCUtR:
	// each tells the other the addresses its peers observed it at, and
	// both dial them at once from their listen port, over each transport
	// a peer observed them on), when the relayed connection comes in and,
	// while it is still the only one, again 15 s later, then at doubling
	// intervals up to 8 minutes. That works through NATs that keep a
	// host's mapping for every destination (endpoint-independent mapping:
	// Linux MASQUERADE, most home routers) and drop unsolicited packets (a
	// router that answers an unsolicited SYN with a reset defeats it where
	// the direct path is much shorter than the relayed round trip that
	// times the two dials: one SYN gets there before the other side's has
	// opened the mapping); it fails through NATs that map each flow to a
	// port of its own ("symmetric": carrier NATs, MASQUERADE
	// --random-fully), and the peers stay relayed.
	// Once a direct connection is up, the node closes its relayed ones to
	// that peer, so the two no longer depend on the relay.
	// Status.Links reports each link direct or relayed, and how the last
	// hole punch ended (Link.Punch).
	Relays []peer.AddrInfo

	// AnnounceAddrs, when set, replace the listen addresses in what the
	// node tells its peers (identify and discovery): the addresses of a
	// port mapping on a router in front of it, say. Multiaddrs without
	// /p2p.
	AnnounceAddrs []string

	// MDNS turns on local-network discovery by multicast DNS. Default off.
	// It multicasts on every non-loopback interface.
	MDNS bool

	// PSK, when set, makes a private network: only peers with the same
	// 32-byte key can connect.
	PSK pnet.PSK

	// Allow, when not empty, is the list of the only peers this node will
	// connect to or accept.
	Allow []peer.ID

	// Gater is an extra connection gater consulted after Allow (tests use
	// one to cut partitions). Nil: none.
	Gater connmgr.ConnectionGater

	// Logger receives the node's logs. Nil: slog.Default().
	Logger *slog.Logger

	// Registerer receives the node's Prometheus metrics (counters, the
	// histograms signalmesh_publish_seconds by consistency,
	// signalmesh_delivery_lag_seconds and signalmesh_heal_seconds, the
	// time from a first signal this node could not deliver yet to none
	// waiting: a heal's convergence) and libp2p's own metrics (passed
	// as libp2p.PrometheusRegisterer; do not pass that in HostOptions
	// too). Nil: none are registered (Status still reports the counts),
	// and libp2p uses its default, the global registry.
	//
	// Several nodes in one process need one label set each on a shared
	// registry, or New fails (the metric names are the same):
	//
	//	node.Config{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"node": "a"}, reg)}
	//
	// libp2p's metrics are process-wide: under each label set they show
	// the counts of every host in the process.
	Registerer prometheus.Registerer

	// Retention is how long the journal keeps signals, per type pattern
	// (journal.Rule: an age, a count, a size, or several; the first rule that
	// matches applies; nil keeps everything). So far it bounds the local
	// view: Replay (which says where it cut, a *TruncatedError), the
	// daemon's /v1/replay and the backlog of a new subscription leave out
	// what is past it; the signals stay on disk and still count for
	// dedup and causes until the epochs of package journal's design
	// reclaim them. Every peer of a mesh should have the same rules.
	Retention journal.Retention

	// PublishMiddleware wraps every Publish, outermost first: validation,
	// enrichment, auditing, rate limits. It sees the caller's signals before
	// they are stamped.
	PublishMiddleware []PublishMiddleware

	// DispatchMiddleware wraps every subscription's handler, outermost
	// first, outside the subscription's own WithMiddleware.
	DispatchMiddleware []Middleware

	// HostOptions are extra libp2p options, applied after the node's own
	// (a bandwidth reporter, a resource manager, transports). An option that
	// contradicts the node's (identity, gater, private network) wins and is
	// the caller's responsibility.
	HostOptions []libp2p.Option

	// Region tags the node (a data centre, a zone: "eu-west"). It is
	// published with the node's entries in the subscription set, and the
	// LocalFirst strategy of consumer groups prefers a member in the
	// region of the peer that published a signal. Empty: no region.
	Region string

	// Params tune the node's queues and timers; zero fields take defaults.
	Params Params
}

// Params are the node's tunables. Every field's zero value means its default.
type Params struct {
	// MaxBatch is the most signals one outbox commit holds (one fsync).
	// Default 1,000.
	MaxBatch int
	// MaxBatchDelay is how long the committer waits for more publishes once
	// one is queued. Default 0: it takes what is queued and commits at
	// once; while a commit runs (an fsync on disk), later publishes queue
	// and form the next batch, so batches grow with the load by themselves.
	// A delay adds to every Publish's latency, and the Go runtime rounds a
	// sub-millisecond wait up to about a millisecond on an idle machine.
	MaxBatchDelay time.Duration
	// CommitQueue bounds the publishes waiting for the committer. Default
	// 4,096. When full, Publish waits (its ctx bounds the wait).
	CommitQueue int
	// JournalBatch is the most signals one CRDT delta (one DAG node) holds.
	// Default 5,000; go-ds-crdt also cuts a delta at 1 MiB. Fewer, larger
	// DAG nodes make a replica that missed them catch up faster.
	JournalBatch int
	// JournalDelay is how long the journaler gathers signals from the
	// outbox before it writes a delta. Default 50 ms: longer means fewer DAG
	// nodes (a replica that missed the gossip fetches them one by one), and a
	// later journal path; gossip is not delayed.
	JournalDelay time.Duration
	// CausalBuffer bounds the signals waiting for a dependency. Default
	// 100,000. When full, a signal that is not ready is not kept (counted
	// as "causal_buffer_full"); the node reads it again from the journal,
	// per origin in sequence, once the signals it waits for are delivered:
	// the bound costs time, never a signal.
	CausalBuffer int
	// OriginBuffer bounds the signals of one origin waiting in the causal
	// buffer. Default a quarter of CausalBuffer (all of it below 1,024).
	// Past it, that origin's signals that are not ready are read again
	// from the journal later, like those refused when the buffer is full;
	// and when the buffer is full, the origin holding the most gives up
	// its highest waiting signal to an origin holding fewer. So one peer
	// flooding signals that never become ready holds at most this many
	// (memory: OriginBuffer times the largest signal) and cannot keep the
	// other peers' signals out. Negative: no per-origin bound (one origin
	// may fill the buffer).
	OriginBuffer int
	// SubscriberQueue bounds the signals queued for one subscription.
	// Default 100,000. Past it, signals for that subscription are dropped
	// and counted under "subscriber_overflow".
	SubscriberQueue int
	// Resync is how often the node checks for work left over: after the
	// causal buffer overflowed, or while signals wait, it pulls what they
	// need from the journal; it releases signals past CauseWait and
	// reports causes missing past CauseTimeout. Default 1 s.
	Resync time.Duration
	// CauseTimeout is how long signals may wait for a missing cause before
	// the node reports it (a warning naming the gaps, and the counter
	// "missing_cause"). It keeps waiting: the cause may still come. Default 30 s.
	CauseTimeout time.Duration
	// CauseWait is how long a signal waits for its causeid to be
	// delivered before it is delivered without it (counted as
	// "cause_not_found", with a warning): a cause that is not in the mesh
	// at all (a typo, an id from outside) must not hold its effect, and the
	// publishing peer's later signals, forever. Default 2 minutes. A replica
	// cut off from a cause's publisher for longer may deliver the effect
	// first; raise it for meshes that stay partitioned longer. Negative:
	// wait forever.
	CauseWait time.Duration
	// DepWait is how long a signal waits for a dependency (its origin's
	// previous signal, or a signal its publisher had delivered) that no
	// peer offered and this replica's journal does not hold: one lost with
	// the only peers that had it, say a publisher killed right after
	// another peer delivered its signal and before anyone journaled it.
	// After that it is delivered without it (counted as
	// "dependency_not_found", with a warning); a previous signal given up
	// that turns up later is still delivered, out of its origin's order
	// ("delivered_late"). A dependency in the journal is never given up.
	// Default 1 minute: well below CauseWait, so that a cause held by a
	// lost dependency elsewhere is given up, adopted and here before its
	// effects' CauseWait ends. Keep it well above what a dependency that
	// exists can take to arrive: a journal fetch that waits for a block
	// whose holder restarted or left fails after 20 s, and the repair walk
	// fetches it again within the next 10 s, so below about 30 s plus the
	// longest outage a peer rides out, DepWait gives up signals that were
	// on their way (they are delivered late, out of order). Negative: wait
	// forever.
	DepWait time.Duration
	// MaxDeps caps the direct dependencies a published signal names
	// (1..48, default 16): the signals this node delivered from other
	// origins since its previous signal, latest first. More is exact
	// causal order when many peers publish at once; fewer is smaller
	// metadata. Stamps that left some out are counted ("deps_truncated").
	MaxDeps int
	// Adopt is how long after delivering a signal whose journal entry has
	// not reached this replica the node journals it itself (and at a clean
	// Close, at once). Default 5 s. A signal delivered by gossip stays in
	// the mesh even if its origin leaves before any replica fetched its
	// delta; shorter adopts more copies when the journal path is merely slow.
	// Negative: never (then such a signal is only as durable as its origin).
	Adopt time.Duration
	// StoreCache is the block cache of the on-disk store, in bytes.
	// Default 32 MiB (pebble's own default is 8 MiB). go-ds-crdt reads
	// several keys for every journal entry it merges, so a peer catching
	// up on a large history is bound by these reads: 32 MiB made catching
	// up on 300,000 signals 1.8x faster here. Ignored in memory.
	StoreCache int
	// HandOff bounds how long Close waits for a connected peer to hold this
	// node's last journal deltas (the last entry of each of its latest 64
	// journal batches, and what Close adopted), so that a peer that
	// publishes and leaves at once leaves nothing only it holds. Default
	// 5 s; negative: Close does not wait. Close waits only while a peer is
	// connected, and only for what was published before Close was called.
	HandOff time.Duration
	// Prune is how often the node deletes from its store the journal
	// signals past an age limit of Config.Retention that it has delivered,
	// with their journal blocks and index entries (see prune.go). Default
	// a quarter of the shortest age limit, at least 1 s and at most 10
	// minutes; negative: never (the signals then stay on disk, left out
	// of every view). Without an age limit nothing is pruned.
	Prune time.Duration
	// Rebroadcast is go-ds-crdt's head re-announcement interval. Default
	// 2 s; heads are also sent to each peer that joins.
	Rebroadcast time.Duration
	// Redial is how often the node dials the Bootstrap peers it is not
	// connected to, and known peers while it is connected to none (each
	// dial bounded by the same duration). Default 2 s.
	// Shorter finds a healed peer sooner and costs a failing dial per
	// absent peer per interval.
	Redial time.Duration

	// Discover is how often the node announces its addresses to the mesh
	// (it also does so when a peer joins that has not announced itself
	// here within 1.5 Discover: a newcomer, or a peer back from a longer
	// cut; see Status.JoinsUnanswered), so that nodes that know one
	// peer find the others: a node dials the peers it hears of while it
	// has fewer than ConnLow connections, except a peer disconnected from
	// it within the last two ConnGrace (at least three Discover): one that
	// trimmed it, most likely. Default 10 s; negative: off (the
	// node neither announces nor dials what it hears). GossipSub peer
	// exchange (on PRUNE) works either way.
	Discover time.Duration

	// ConnLow and ConnHigh are the connection manager's low and high
	// water. When the node has ConnHigh connections or more at a check
	// (every half ConnGrace, at most 10 s apart), it closes connections,
	// lowest valued first, until ConnLow are left, counting neither the
	// connections younger than ConnGrace nor the protected peers
	// (Bootstrap and Relays). GossipSub mesh peers, and peers that served
	// a block to a journal fetch in progress (bitswap), are closed last:
	// valued, not protected, so that the high water holds (GossipSub
	// grafts others at its next heartbeat, a fetch asks other peers; and
	// bitswap's protection of such a peer can outlive the fetch). So
	// right after a trim the node has at most ConnLow + protected + young
	// connections; between trims, up to MaxConns. Discovery dials peers
	// only while the node has fewer than ConnLow. Defaults 160 and 192
	// (libp2p's); one set alone: the other is derived (High = Low*1.2+1,
	// Low = High*5/6). ConnLow must be below ConnHigh.
	ConnLow, ConnHigh int
	// ConnGrace is how long a new connection is safe from trims. Default
	// 1 minute (libp2p's).
	ConnGrace time.Duration
	// MaxConns is the hard limit on the node's connections, inbound and
	// outbound, held by libp2p's resource manager: past it a dial or an
	// inbound connection fails at once. Default 0: libp2p's limit scaled
	// to the machine's memory and file descriptors (DefaultMaxConns; the
	// resource manager's other limits, streams and memory, are always
	// libp2p's scaled defaults). At least ConnHigh when set.
	MaxConns int

	// Lease is how long an entry of the subscription set (a node's record,
	// a subscription, a consumer group's member) stays live without being
	// renewed. Each node renews its own every Lease/3 by gossip (and
	// writes them to the set's CRDT every 10 leases, in one delta), and
	// reads the set every Lease/8 (and when an entry comes or goes). It
	// also renews soon after a peer joins that has sent it no renewal
	// within Lease/2, and when a peer it is connected to says it is
	// starting (see Status.JoinsUnanswered). A member
	// of a consumer group whose renewals stop (a kill -9, a cut link) is
	// dropped after Lease as this replica sees it, and its share moves to
	// the others: Lease is the failover time, and the window in which a
	// dead member's last handlings may be handled again (see Subscribe).
	// Any node deletes entries not renewed for two leases. Default 10 s.
	// Shorter fails over sooner, and gossips and writes more (each CRDT
	// write is a delta kept in the set's history).
	Lease time.Duration
	// MaxRegistry bounds the entries of the subscription set a node reads:
	// past it the rest are ignored and counted ("registry_full").
	// Default 4,096.
	MaxRegistry int
	// GossipDegree is the GossipSub mesh degree D: how many peers each
	// peer forwards a frame to (flood publish still sends a node's own
	// frames to every peer it is connected to). Default 4, where GossipSub's
	// is 6: gossip here carries speed, the journal completeness, so fewer
	// copies of each frame cost less CPU and bandwidth for the same
	// deliveries (BENCHMARKS.md: a burst of 10,000 to 8 peers took 2.0 s at
	// 6, 1.8 s at 4, 1.6 s at 3). The mesh's other degrees follow D as
	// GossipSub's defaults follow 6 (Dlo = 5D/6, Dhi = 2D, Dscore = 2D/3,
	// Dout = D/3, kept below Dlo and D/2; see GossipSubParams for the
	// gossip to peers outside the mesh). At 3 and below Dout is 0: the
	// mesh keeps no quota of peers this node dialed, GossipSub's guard
	// against a peer that floods it with inbound connections. From 2 to 32.
	GossipDegree int
}

func (p Params) withDefaults() Params {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&p.MaxBatch, 1000)
	def(&p.JournalBatch, 5000)
	def(&p.CommitQueue, 4096)
	def(&p.CausalBuffer, 100000)
	if p.OriginBuffer < 0 {
		p.OriginBuffer = 0 // the core's "no per-origin bound"
	} else if p.OriginBuffer == 0 || p.OriginBuffer > p.CausalBuffer {
		p.OriginBuffer = p.CausalBuffer
		if p.CausalBuffer >= 1024 {
			p.OriginBuffer = p.CausalBuffer / 4
		}
	}
	def(&p.SubscriberQueue, 100000)
	if p.JournalDelay == 0 {
		p.JournalDelay = 50 * time.Millisecond
	}
	if p.CauseTimeout == 0 {
		p.CauseTimeout = 30 * time.Second
	}
	if p.Resync == 0 {
		p.Resync = time.Second
	}
	if p.Rebroadcast == 0 {
		p.Rebroadcast = 2 * time.Second
	}

	if p.HandOff == 0 {
		p.HandOff = 5 * time.Second
	}
	if p.Adopt == 0 {
		p.Adopt = 5 * time.Second
	}
	if p.CauseWait == 0 {
		p.CauseWait = 2 * time.Minute
	} else if p.CauseWait < 0 {
		p.CauseWait = 0 // the core's "forever"
	}
	if p.DepWait == 0 {
		p.DepWait = time.Minute
	} else if p.DepWait < 0 {
		p.DepWait = 0 // the core's "forever"
	}
	def(&p.MaxDeps, 16)
	def(&p.StoreCache, 32<<20)
	if p.Redial == 0 {
		p.Redial = 2 * time.Second
	}
	if p.ConnLow == 0 && p.ConnHigh == 0 {
		p.ConnLow, p.ConnHigh = 160, 192
	} else if p.ConnHigh == 0 {
		p.ConnHigh = p.ConnLow + p.ConnLow/5 + 1
	} else if p.ConnLow == 0 {
		p.ConnLow = p.ConnHigh * 5 / 6
	}
	if p.ConnGrace == 0 {
		p.ConnGrace = time.Minute
	}
	if p.Discover == 0 {
		p.Discover = 10 * time.Second
	}
	if p.Lease == 0 {
		p.Lease = 10 * time.Second
	}
	def(&p.MaxRegistry, 4096)
	def(&p.GossipDegree, 4)
	return p
}

// Validate reports the first bad field.
func (p Params) Validate() error {
	if p.MaxBatch < 0 || p.CommitQueue < 0 || p.JournalBatch < 0 || p.JournalDelay < 0 || p.CausalBuffer < 0 || p.SubscriberQueue < 0 ||
		p.MaxBatchDelay < 0 || p.Resync < 0 || p.CauseTimeout < 0 || p.Rebroadcast < 0 || p.Redial < 0 || p.MaxDeps < 0 || p.StoreCache < 0 ||
		p.ConnLow < 0 || p.ConnHigh < 0 || p.ConnGrace < 0 || p.MaxConns < 0 || p.Lease < 0 || p.MaxRegistry < 0 ||
		p.GossipDegree < 0 || p.GossipDegree == 1 || p.GossipDegree > 32 {
		return fmt.Errorf("node: negative parameter (or GossipDegree not 0 or 2-32) in %+v", p)
	}
	if d := p.withDefaults(); d.ConnLow >= d.ConnHigh {
		return fmt.Errorf("node: Params.ConnLow %d, want below ConnHigh %d", d.ConnLow, d.ConnHigh)
	} else if p.MaxConns > 0 && p.MaxConns < d.ConnHigh {
		return fmt.Errorf("node: Params.MaxConns %d, want at least ConnHigh %d", p.MaxConns, d.ConnHigh)
	}
	if p.Lease > 0 && (p.Lease < 100*time.Millisecond || p.Lease > maxLease) {
		return fmt.Errorf("node: Params.Lease %v, from 100ms to 1h", p.Lease)
	}
	if p.MaxDeps > causal.MaxDeps {
		return fmt.Errorf("node: Params.MaxDeps %d, at most %d", p.MaxDeps, causal.MaxDeps)
	}
	return nil
}

var meshName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate reports the first bad field of c.
func (c *Config) Validate() error {
	if !meshName.MatchString(c.Mesh) {
		return errors.New("node: Config.Mesh must be 1-64 letters, digits, '.', '_' or '-'")
	}
	if len(c.Region) > 64 || strings.ContainsAny(c.Region, "/\x00") {
		return errors.New("node: Config.Region: at most 64 bytes, no '/'")
	}
	if c.PSK != nil && len(c.PSK) != 32 {
		return fmt.Errorf("node: Config.PSK is %d bytes, want 32", len(c.PSK))
	}
	if err := c.Retention.Validate(); err != nil {
		return fmt.Errorf("node: Config.Retention: %w", err)
	}
	return c.Params.Validate()
}
