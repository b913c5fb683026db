package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/internal/netns"
)

// BenchmarkNATRelayedVersusDirect measures, in TestNATTopology's networks
// and in one run, what a relayed connection costs against a direct one:
// edge a1 publishes, b1 (behind another port-preserving NAT: direct by a
// hole punch) and c1 (behind the symmetric NAT: relayed by the public
// node) receive. Latency is a delivery's time in the receiver's record
// minus the same signal's in a1's (one clock: namespaces share the host's).
//
//   - steady: 100 signals, one publish call each (about 20 a second);
//   - batch: 1,000 signals in one call;
//   - catch-up: b1 and c1 stopped (SIGSTOP) while a1 publishes 1,000, then
//     resumed together: the time from the resume to each one's last
//     delivery (the heal of a node that was away, over each link).
//
// Not in CI (it builds namespaces and takes about a minute):
//
//	go test -run XXX -bench NATRelayedVersusDirect -benchtime 1x ./cmd/signalmesh
var natBenchRuns atomic.Int32

func BenchmarkNATRelayedVersusDirect(b *testing.B) {
	// A prefix of its own each run: -count runs it again in this process
	// while the kernel may still hold the last run's links.
	prefix := fmt.Sprintf("smb%d%d", os.Getpid()%10000, natBenchRuns.Add(1)%10)
	if !netns.Available(prefix + "probe") {
		b.Skip("network namespaces unavailable (needs root and the ip command)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		b.Skip("no iptables command (Debian package iptables)")
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	n := &natNet{t: b, prefix: prefix, exe: exe, dir: b.TempDir()}
	n.build()
	pub := n.start("pub", "-relay")
	relay := "/ip4/10.231.0.10/tcp/4001/p2p/" + pub.id
	procs := map[string]*proc{}
	var edges []*proc
	for _, r := range natRouters {
		for _, e := range r.edges {
			p := n.start(e, "-bootstrap", relay, "-relays", relay)
			procs[e], edges = p, append(edges, p)
		}
	}
	a1, b1, c1 := procs["a1"], procs["b1"], procs["c1"]
	if a1 == nil || b1 == nil || c1 == nil {
		b.Fatal("the topology has no a1, b1 or c1")
	}
	names := map[string]string{pub.id: "pub"}
	for _, p := range edges {
		names[p.id] = p.name
	}
	waitFor(b, 90*time.Second, "a1-b1 direct and a1-c1 relayed", func() bool {
		links := n.edgeLinks(edges, names)
		return links["a1-b1"].direct >= 2 && links["a1-c1"].sides >= 2 && links["a1-c1"].direct == 0
	})
	api := "http://127.0.0.1:7070"
	publish := func(typ string, count int) {
		if _, err := n.cli(a1, "publish", "-node", api, "-type", typ, "-count", fmt.Sprint(count)); err != nil {
			b.Fatal(err)
		}
	}
	have := func(p *proc, typ string, want int) func() bool {
		return func() bool { return len(deliveredAt(p, typ)) >= want }
	}
	b.ResetTimer()
	for range b.N {
		run := fmt.Sprint(time.Now().UnixNano())
		// steady
		steady := "bench.steady." + run
		for range 100 {
			publish(steady, 1)
		}
		for _, p := range []*proc{a1, b1, c1} {
			waitFor(b, 60*time.Second, p.name+" has the steady signals", have(p, steady, 100))
		}
		sent := deliveredAt(a1, steady)
		for _, p := range []*proc{b1, c1} {
			var lat []float64
			for id, t := range deliveredAt(p, steady) {
				lat = append(lat, float64(t-sent[id])/1e6)
			}
			slices.Sort(lat)
			b.ReportMetric(lat[len(lat)/2], p.name+"-steady-p50-ms")
			b.ReportMetric(lat[len(lat)*99/100], p.name+"-steady-p99-ms")
		}
		// batch
		batch := "bench.batch." + run
		publish(batch, 1000)
		for _, p := range []*proc{a1, b1, c1} {
			waitFor(b, 120*time.Second, p.name+" has the batch", have(p, batch, 1000))
		}
		first := slices.Min(valuesOf(deliveredAt(a1, batch)))
		for _, p := range []*proc{b1, c1} {
			b.ReportMetric(float64(slices.Max(valuesOf(deliveredAt(p, batch)))-first)/1e6, p.name+"-batch-last-ms")
		}
		// catch-up after a pause
		away := "bench.away." + run
		for _, p := range []*proc{b1, c1} {
			if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
				b.Fatal(err)
			}
		}
		publish(away, 1000)
		waitFor(b, 60*time.Second, "a1 has the signals published while b1 and c1 were stopped", have(a1, away, 1000))
		resumed := time.Now().UnixNano()
		for _, p := range []*proc{b1, c1} {
			if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT); err != nil {
				b.Fatal(err)
			}
		}
		for _, p := range []*proc{b1, c1} {
			waitFor(b, 120*time.Second, p.name+" caught up", have(p, away, 1000))
			b.ReportMetric(float64(slices.Max(valuesOf(deliveredAt(p, away)))-resumed)/1e6, p.name+"-catchup-ms")
		}
	}
}

// deliveredAt reads p's record: the time of each delivery of a signal of
// type typ, by id.
func deliveredAt(p *proc, typ string) map[string]int64 {
	got := map[string]int64{}
	b, _ := os.ReadFile(p.record)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(typ)) {
			continue
		}
		var e struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			T    int64  `json:"t"`
		}
		if json.Unmarshal(line, &e) == nil && e.Type == typ {
			if _, ok := got[e.ID]; !ok {
				got[e.ID] = e.T
			}
		}
	}
	return got
}

func valuesOf(m map[string]int64) []int64 {
	out := make([]int64, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
