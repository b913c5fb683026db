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
	}
}

func (h *histograms) collectors() []prometheus.Collector {
	return []prometheus.Collector{h.publish, h.lag}
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
