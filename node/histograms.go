package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalmesh/signalmesh"
)

// histograms are the node's latency distributions, kept only when a
// Registerer is configured.
type histograms struct {
	publish *prometheus.HistogramVec // seconds, by consistency
	lag     prometheus.Histogram     // seconds from a signal's time to its handler
	heal    prometheus.Histogram     // seconds from a first waiting signal to none waiting
}

func newHistograms() *histograms {
	return &histograms{
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "signalmesh",
			Name: "publish_seconds", Help: "Time Publish took, by consistency (weak, eventual, quorum:K).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"consistency"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "signalmesh",
			Name: "delivery_lag_seconds", Help: "Time from a signal's time attribute to a subscription's handler call on this node " +
				"(signals without time are not counted; includes clock skew between peers).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
		heal: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "signalmesh",
			Name: "heal_seconds", Help: "Convergence time: from the moment this node first holds a signal it cannot deliver yet " +
				"(a gap: a partition healing, a peer catching up, gossip ahead of the journal) to the moment no signal waits " +
				"and nothing is left to pull from the journal.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
	}
}

func (h *histograms) collectors() []prometheus.Collector {
	return []prometheus.Collector{h.publish, h.lag, h.heal}
}

// timePublish is the outermost publish middleware when histograms are on.
func (h *histograms) timePublish(next PublishFunc) PublishFunc {
	return func(ctx context.Context, c Consistency, sigs []*signalmesh.Signal) error {
		start := time.Now()
		err := next(ctx, c, sigs)
		if err == nil {
			h.publish.WithLabelValues(c.String()).Observe(time.Since(start).Seconds())
		}
		return err
	}
}

// observeLag is the outermost dispatch middleware when histograms are on.
func (h *histograms) observeLag(next Handler) Handler {
	return func(ctx context.Context, s *signalmesh.Signal) error {
		if !s.Time.IsZero() {
			h.lag.Observe(max(0, time.Since(s.Time).Seconds()))
		}
		return next(ctx, s)
	}
}

// healClock times the episodes in which the causal core waits: one starts
// when a signal cannot be delivered yet (or the journal must be pulled)
// and ends when nothing waits. Owned by the node's loop.
type healClock struct {
	since time.Time // zero: nothing waits
}

// note records whether something waits now, observing an episode that ends.
func (c *healClock) note(h *histograms, waiting bool, now time.Time) {
	switch {
	case waiting && c.since.IsZero():
		c.since = now
	case !waiting && !c.since.IsZero():
		h.heal.Observe(now.Sub(c.since).Seconds())
		c.since = time.Time{}
	}
}
