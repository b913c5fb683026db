package node

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// meshPeer records that p joined (in) or left the signals topic's mesh.
func (m *metrics) meshPeer(p peer.ID, in bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in {
		m.mesh[p] = struct{}{}
	} else {
		delete(m.mesh, p)
	}
}

func (m *metrics) meshSize() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mesh)
}

// metrics are the node's counters: atomics read by Status, mirrored to
// Prometheus when a Registerer is configured.
type metrics struct {
	published, delivered, deduped, journaled, handlerErrors       atomic.Int64
	buffered, conflicts, spilled, adopted, relinked, truncated    atomic.Int64
	rpcsIn, rpcsOut                                               atomic.Int64 // GossipSub RPCs, all topics
	snapshotsServed, pruned, prunedBlocks                         atomic.Int64 // snapshot joins this node answered; journal entries and blocks pruned
	forgotten                                                     atomic.Int64 // origins that left, forgotten (origins.go)
	takenOver, passedBack, leaseRenewals, leaseBytes, leaseGossip atomic.Int64 // consumer groups and the subscription set
	joinsUnanswered                                               atomic.Int64 // joins left to the next round (pace.go)
	ihaveLeft                                                     atomic.Int64 // message ids of signals-topic gossip from newly connected peers, not asked for (inspectRPC)

	mu       sync.Mutex // guards the three maps
	dropped  map[string]int64
	rejected map[string]int64
	mesh     map[peer.ID]struct{} // GossipSub mesh peers of the signals topic

	prom struct {
		counters *prometheus.CounterVec // published, delivered, ...
		dropped  *prometheus.CounterVec
		rejected *prometheus.CounterVec
	}
	hist *histograms // nil without a Registerer

	// links counts the connected peers reached directly and only through
	// a relay (set by the node before init; read at each scrape).
	links func() (direct, relayed int)
}

// init makes the maps and registers the metrics with reg (none when reg is
// nil). A Registerer that already holds signalmesh metrics (another node's)
// is an error, not a panic: see Config.Registerer.
func (m *metrics) init(reg prometheus.Registerer) error {
	m.dropped, m.rejected, m.mesh = map[string]int64{}, map[string]int64{}, map[peer.ID]struct{}{}
	if reg == nil {
		return nil
	}
	m.prom.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "signalmesh",
		Name: "dropped_total", Help: "Signals dropped, by reason."}, []string{"reason"})
	m.prom.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "signalmesh",
		Name: "rejected_total", Help: "Malformed or hostile messages rejected, by reason."}, []string{"reason"})
	m.hist = newHistograms()
	cs := append([]prometheus.Collector{m.prom.dropped, m.prom.rejected,
		counterFunc("published_total", "Signals published by this node.", &m.published),
		counterFunc("delivered_total", "Signals handled by subscriptions.", &m.delivered),
		counterFunc("deduped_total", "Signal copies dropped as duplicates.", &m.deduped),
		counterFunc("journaled_total", "Journal entries seen by this replica.", &m.journaled),
		counterFunc("handler_errors_total", "Handler errors and panics.", &m.handlerErrors),
		counterFunc("adopted_total", "Signals delivered here by gossip and journaled here because their journal entry did not come.", &m.adopted),
		counterFunc("spilled_total", "Signals a slow named subscription kept in its log on disk.", &m.spilled),
		counterFunc("conflicts_total", "Signals delivered whose (source, id) another signal with other content had.", &m.conflicts),
		counterFunc("relinked_total", "Connected peers connected to again because GossipSub or bitswap had stopped sending to them.", &m.relinked),
		counterFunc("pruned_total", "Journal entries this node deleted from its store past retention (Params.Prune).", &m.pruned),
		counterFunc("pruned_blocks_total", "Journal blocks this node deleted from its store past retention (Params.Prune).", &m.prunedBlocks),
		counterFunc("gossip_left_total", "Message ids named by gossip (IHAVE) on the signals topic from peers connected for less than GossipSub's gossip window, left out while this node has a mesh on the topic (mostly frames published before the peers were connected; the journal brings journaled ones).", &m.ihaveLeft),
		counterFunc("truncated_total", "Signals past Config.Retention that a subscription's backlog passed over (each backlog's count in a truncation notice).", &m.truncated),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "signalmesh", Name: "buffered",
			Help: "Signals waiting for a cause."}, func() float64 { return float64(m.buffered.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "signalmesh", Name: "peers_direct",
			Help: "Connected peers with a direct connection."}, func() float64 { d, _ := m.linkCounts(); return float64(d) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "signalmesh", Name: "peers_relayed",
			Help: "Connected peers reached only through a relay (circuit relay v2)."}, func() float64 { _, r := m.linkCounts(); return float64(r) })},
		m.hist.collectors()...)
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			m.prom.dropped, m.prom.rejected, m.hist = nil, nil, nil
			return fmt.Errorf("node: Config.Registerer: %w (several nodes on one registry: give each its own labels "+
				"with prometheus.WrapRegistererWith)", err)
		}
	}
	return nil
}

func counterFunc(name, help string, v *atomic.Int64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "signalmesh", Name: name, Help: help},
		func() float64 { return float64(v.Load()) })
}

func (m *metrics) drop(reason string) {
	m.mu.Lock()
	m.dropped[reason]++
	m.mu.Unlock()
	if m.prom.dropped != nil {
		m.prom.dropped.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) reject(reason string) {
	m.mu.Lock()
	m.rejected[reason]++
	m.mu.Unlock()
	if m.prom.rejected != nil {
		m.prom.rejected.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) snapshot() (dropped, rejected map[string]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.dropped), maps.Clone(m.rejected)
}

func (m *metrics) linkCounts() (direct, relayed int) {
	if m.links == nil {
		return 0, 0
	}
	return m.links()
}
