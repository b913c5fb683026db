package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ephPlan is one ephemeral node's part, drawn before the workload starts.
type ephPlan struct {
	at      time.Duration
	host    int // the node it runs beside and bootstraps to
	other   int // a second bootstrap peer
	signals int // 1-3
	quorum  []bool
	kill    bool // leave by kill -9 (else SIGTERM)
}

// planEphemeral draws the ephemeral nodes' parts: start times spread over
// the workload but its last 3 s, hosts, signals, how each leaves.
func planEphemeral(seed uint64, count, nodes int, d time.Duration) []ephPlan {
	rng := rand.New(rand.NewPCG(seed, 0xe9))
	span := max(d-3*time.Second, time.Second)
	out := make([]ephPlan, count)
	for k := range out {
		p := ephPlan{at: 300*time.Millisecond + span*time.Duration(k)/time.Duration(max(count, 1)) + time.Duration(rng.Int64N(int64(200*time.Millisecond))),
			host: rng.IntN(nodes), other: rng.IntN(nodes), signals: 1 + rng.IntN(3), kill: rng.IntN(2) == 0}
		for j := 0; j < 3; j++ {
			p.quorum = append(p.quorum, rng.IntN(4) == 0)
		}
		out[k] = p
	}
	return out
}

// ephemerals runs the ephemeral nodes of the plan, at most 4 at a time,
// until ctx ends; it returns how each that ran ended.
func (w *workload) ephemerals(ctx context.Context, plan []ephPlan) []Ephemeral {
	out := make([]Ephemeral, len(plan))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for k, p := range plan {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(w.start.Add(p.at))):
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[k] = w.ephemeral(ctx, k, p)
		}()
	}
	wg.Wait()
	return out
}

// ephemeral runs one ephemeral node: start it in memory beside its host,
// wait until it has a peer, publish, and leave after the answers.
func (w *workload) ephemeral(ctx context.Context, k int, p ephPlan) (e Ephemeral) {
	c := w.c
	listen, api := c.net.extra(p.host, k)
	argv := append(append([]string(nil), c.spec.Command...),
		"-mesh", c.mesh, "-listen", listen, "-http", api, "-log-level", "warn", "-insecure-http",
		"-config", filepath.Join(c.dir, "params.json"))
	argv = append(argv, "-bootstrap", strings.Join(c.bootBeside(p.host, p.other), ","))
	argv = append(argv, c.edgeRelays(p.host)...)
	l, err := c.launch(ctx, c.net.wrap(p.host, argv), filepath.Join(c.dir, fmt.Sprintf("ephemeral-%d.log", k)))
	if err != nil {
		c.log("ephemeral %d: %v", k, err)
		return Ephemeral{Host: p.host, End: "failed"}
	}
	e = Ephemeral{Peer: l.id, Host: p.host, End: "term"} // the deferred leave sets how it ended: a named result, or the caller gets "term"
	acked := 0
	defer func() {
		sig := syscall.SIGTERM
		if p.kill {
			sig, e.End = syscall.SIGKILL, "kill"
		}
		_ = syscall.Kill(-l.cmd.Process.Pid, sig)
		select {
		case <-l.exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
			<-l.exited
			e.End = "kill"
		}
		if e.End == "term" && handOffFailed(filepath.Join(c.dir, fmt.Sprintf("ephemeral-%d.log", k))) {
			// Its Close said no peer confirmed its last signals within
			// the hand-off time (a cut, its peer restarting): in memory,
			// they went with it, as after a kill.
			e.End = "term-unconfirmed"
		}
		c.log("ephemeral %d (%s) beside node %d: %d of %d acked, left by %s", k, l.id, p.host, acked, p.signals, e.End)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st struct {
			Peers []string `json:"peers"`
		}
		if err := c.getAt(ctx, api, "/v1/status", &st); err == nil && len(st.Peers) > 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	for j := 0; j < p.signals && ctx.Err() == nil; j++ {
		op := Op{Source: srcMain, ID: fmt.Sprintf("e%d-%d-%d", w.seed, k, j), Type: "chaos.cause", Node: -1, Ephemeral: k + 1,
			Origin: l.id, Consistency: "eventual", At: time.Since(w.start), Live: true}
		if p.quorum[j] {
			op.Consistency = "quorum:1"
		}
		if w.setup.Doomed > 0 {
			w.timeOf(&op, op.At < w.spec.Duration/2)
		}
		if w.publish(op, api, nil).Outcome == Acked {
			acked++
		}
	}
	return e
}

// handOffFailed reports whether a node's log says its Close could not hand
// its last signals to a peer (node.Params.HandOff).
func handOffFailed(log string) bool {
	b, err := os.ReadFile(log)
	return err == nil && (bytes.Contains(b, []byte("close: no connected peer confirmed")) ||
		bytes.Contains(b, []byte("close: no connected peer to hand")) ||
		bytes.Contains(b, []byte("close: the journal did not take the last signals")))
}
