package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/signalmesh/signalmesh/node"
)

// Several nodes share one registry when each has its own labels; without
// them New fails instead of panicking. The registry holds the publish and
// delivery-lag histograms per node, and libp2p's metrics.
func TestMetricsOnSharedRegistry(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewRegistry()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		c.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"node": []string{"a", "b"}[i]}, reg)
	})
	if _, err := node.New(context.Background(), node.Config{Mesh: "unlabelled", Registerer: reg, Logger: testLogger(t)}); err == nil ||
		!strings.Contains(err.Error(), "WrapRegistererWith") {
		t.Fatalf("a node without labels on the shared registry: %v", err)
	}
	got := newRecorder()
	sub, err := nodes[1].Subscribe("m.*", got.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := nodes[0].PublishWith(context.Background(), node.Eventual, mustSignal(t, "m.x")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].PublishWith(context.Background(), node.Weak, mustSignal(t, "m.y")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the eventual signal on node b", func() bool { return got.count() >= 1 })

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	count := func(name string, labels map[string]string) uint64 {
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if hasLabels(m, labels) {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
		return 0
	}
	if n := count("signalmesh_publish_seconds", map[string]string{"node": "a", "consistency": "eventual"}); n != 1 {
		t.Errorf("publish_seconds{node=a,consistency=eventual}: %d samples, want 1", n)
	}
	if n := count("signalmesh_publish_seconds", map[string]string{"node": "a", "consistency": "weak"}); n != 1 {
		t.Errorf("publish_seconds{node=a,consistency=weak}: %d samples, want 1", n)
	}
	if n := count("signalmesh_delivery_lag_seconds", map[string]string{"node": "b"}); n < 1 {
		t.Errorf("delivery_lag_seconds{node=b}: no samples")
	}
	libp2p := 0
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "libp2p_") {
			libp2p++
		}
	}
	if libp2p == 0 {
		t.Error("no libp2p metrics in the registry")
	}
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// A partition that heals shows in signalmesh_heal_seconds: the peer that
// missed signals waits for them, and the episode it times ends once
// nothing waits, within the time the heal took.
func TestHealHistogram(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewRegistry()
	nodes := cluster(t, 2, func(i int, c *node.Config) {
		c.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"node": []string{"a", "b"}[i]}, reg)
	})
	got := newRecorder()
	if _, err := nodes[1].Subscribe("h.**", got.handle); err != nil {
		t.Fatal(err)
	}
	heals := func() (uint64, float64) {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				if f.GetName() == "signalmesh_heal_seconds" && hasLabels(m, map[string]string{"node": "b"}) {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
		t.Fatal("no signalmesh_heal_seconds{node=b}")
		return 0, 0
	}
	cut(nodes[:1], nodes[1:])
	eventually(t, 5*time.Second, "the cut", func() bool { return len(nodes[0].Host().Network().ConnsToPeer(nodes[1].ID())) == 0 })
	for i := range 300 {
		if err := nodes[0].Publish(context.Background(), mustSignal(t, "h.x")); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 { // several journal batches
			eventually(t, 10*time.Second, "the batch journaled", func() bool {
				c, _, _ := nodes[0].JournalDigest(context.Background())
				return c == i+1
			})
		}
	}
	n0, sum0 := heals()
	healed := time.Now()
	heal(t, nodes)
	eventually(t, 60*time.Second, "b to deliver the 300", func() bool { return got.count() == 300 })
	eventually(t, 10*time.Second, "b's episode to end", func() bool { n, _ := heals(); return n > n0 })
	took := time.Since(healed)
	n, sum := heals()
	if sum-sum0 <= 0 || sum-sum0 > took.Seconds() {
		t.Errorf("heal_seconds{node=b}: %d new samples summing %.3f s; the heal took %v", n-n0, sum-sum0, took)
	}
	t.Logf("heal_seconds{node=b}: %d new samples, %.3f s in all; the heal took %v", n-n0, sum-sum0, took)
}
