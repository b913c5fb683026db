package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/signalmesh/signalmesh"
)

// finish heals everything, brings back any process that died by itself,
// runs the settle kill if the schedule has one, waits for quiescence,
// probes every node, and returns the history (ops, journals, records,
// process ends) with the probe and settle failures.
func (c *cluster) finish(ctx context.Context, w *workload, faults []Fault, res *Result) (h History, probeErr, settleErr error, err error) {
	c.cutMu.Lock()
	clear(c.cuts)
	c.cutMu.Unlock()
	_ = c.net.cut(ctx, nil, c)
	for i, p := range c.procs {
		if !p.running() {
			c.kill(i) // records how it ended
			if err := c.start(ctx, i); err != nil {
				return h, nil, nil, err
			}
		}
	}
	healed := time.Now()
	c.hostile = w.hostileReport // its flood waits in the buffers: not the honest mesh's
	killed := make(chan error, 1)
	killed <- nil
	for _, f := range faults {
		if f.Kind == SettleKill {
			<-killed
			go func() {
				c.procs[f.Node].life.Lock()
				defer c.procs[f.Node].life.Unlock()
				c.log("fault %s", f)
				c.settleKill = time.Since(w.start)
				c.kill(f.Node)
				select { // the node stays down this long while the others settle
				case <-time.After(f.For):
				case <-ctx.Done():
				}
				killed <- c.start(ctx, f.Node)
			}()
		}
	}
	ready := func() (bool, error) {
		select {
		case err := <-killed:
			killed <- err
			return true, err
		default:
			return false, nil
		}
	}
	_, settleErr = c.settle(ctx, c.spec.Settle, ready)
	if err := <-killed; err != nil {
		return h, nil, nil, err
	}
	killed <- nil
	// The probes run also when the mesh did not settle: a node that
	// cannot publish or deliver shows there too.
	probeErr = c.probe(ctx, w)
	// Read the journals once the probes are journaled everywhere (read at
	// once, a node read first lacked them: seed 12705's "lost" probes were
	// in every store), also when the mesh did not settle: a probe that
	// came by gossip alone is journaled by its receiver after Params.Adopt
	// (5 s), so a shorter wait would add "lost" probes to the report of a
	// slow mesh (TestChaosNATShort in CI: one probe, delivered, 5 s).
	again := min(15*time.Second, c.spec.Settle)
	journals, err2 := c.settle(ctx, again, ready)
	settleErr = errors.Join(settleErr, err2)
	res.Settled = time.Since(healed)
	if r := w.hostileReport; c.setup.Hostile && c.depWait > 0 && (r == nil || r.Sent[AttackFlood] > 0) && ctx.Err() == nil {
		// A process that started by the heal heard the flood's last
		// signals by then; it gives up their first hole within a scan
		// (DepWait/8) of DepWait, with a fault's length on top.
		if !c.awaitFlood(ctx, healed.Add(c.depWait*9/8+15*time.Second)) && ctx.Err() == nil {
			c.spec.logf("  no node counted the hostile node's flood %v after the heal", time.Since(healed).Round(time.Second))
		}
	}
	if settleErr != nil {
		c.spec.logf("  not quiescent after %v: %v", c.spec.Settle, settleErr)
	}
	h = History{Nodes: len(c.procs), Ops: w.ops(), Journals: journals}
	return h, probeErr, settleErr, ctx.Err()
}

// probe publishes one signal at each node and waits up to 10 s until each
// is acknowledged and delivered to every node's subscription.
func (c *cluster) probe(ctx context.Context, w *workload) error {
	var keys []Key
	var errs []error
	for i, p := range c.procs {
		op := w.publish(Op{Source: srcMain, ID: fmt.Sprintf("probe-%d-%d", w.seed, i), Type: "chaos.probe", Node: i,
			Consistency: "eventual", At: time.Since(w.start), Probe: true}, c.net.api(i), p)
		if op.Outcome != Acked {
			errs = append(errs, fmt.Errorf("node %d did not acknowledge its probe: %s %s", i, op.Outcome, op.Err))
		}
		keys = append(keys, op.Key())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := ""
		for i, p := range c.procs {
			rec, err := ReadRecord(p.record)
			if err != nil {
				return err
			}
			have := map[Key]bool{}
			for _, e := range rec {
				have[e.Key()] = true
			}
			for _, k := range keys {
				if !have[k] && missing == "" {
					missing = fmt.Sprintf("node %d has not delivered %s", i, k)
				}
			}
		}
		if missing == "" {
			return errors.Join(errs...)
		}
		if time.Now().After(deadline) {
			return errors.Join(append(errs, errors.New("10 s after the probes: "+missing))...)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settle waits until every journal has the same digest on two polls in a
// row, every node's record holds every journaled signal, and ready says
// the harness has no fault left to inject, then returns the journals. On
// timeout it returns them as they are, with the reason.
func (c *cluster) settle(ctx context.Context, limit time.Duration, ready func() (bool, error)) ([][]Entry, error) {
	start := time.Now()
	deadline := start.Add(limit)
	last := ""
	var why error
	var trail []string // each change of the reason, for the report
	lastWhy := ""
	note := func(err error) {
		if err != nil && err.Error() != lastWhy {
			lastWhy = err.Error()
			trail = append(trail, fmt.Sprintf("%.1fs %s", time.Since(start).Seconds(), lastWhy))
		}
	}
	for {
		digest, same, err := c.digests(ctx)
		done, _ := ready()
		switch {
		case err != nil:
			why = err
		case !done:
			why = errors.New("a settle kill is under way")
		case !same:
			why = errors.New("the journals differ")
		case digest != last:
			why = errors.New("the journals still change")
		default:
			journals, err := c.journals(ctx)
			if err == nil {
				err = c.recorded(journals)
			}
			if why = err; err == nil {
				return journals, nil
			}
		}
		note(why)
		last = digest
		if time.Now().After(deadline) {
			journals, err := c.journals(ctx)
			if len(trail) > maxTrail {
				trail = append(trail[:maxTrail/2], append([]string{"..."}, trail[len(trail)-maxTrail/2:]...)...)
			}
			return journals, errors.Join(why, err, fmt.Errorf("reasons since the wait began:\n  %s\nthe nodes at the end of the wait:\n%s",
				strings.Join(trail, "\n  "), c.states(ctx)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// digests returns node 0's journal size and digest, and whether every node
// has the same (and no node holds a delivered signal it has not journaled
// yet: it adopts it within seconds, so the journals are not final; nor a
// signal waiting for a dependency: it is delivered, and maybe journaled,
// within DepWait).
func (c *cluster) digests(ctx context.Context) (string, bool, error) {
	common, same := "", true
	for i := range c.procs {
		var d struct {
			Count  int    `json:"count"`
			Digest string `json:"digest"`
		}
		if err := c.get(ctx, i, "/v1/digest", &d); err != nil {
			return "", false, err
		}
		var st nodeStatus
		if err := c.get(ctx, i, "/v1/status", &st); err != nil {
			return "", false, err
		}
		if st.Node.Unjournaled > 0 {
			return "", false, fmt.Errorf("node %d holds %d delivered signals it has not journaled", i, st.Node.Unjournaled)
		}
		honest := slices.ContainsFunc(st.Node.Missing, func(g struct{ Origin string }) bool { return !c.hostile.origin(g.Origin) })
		if st.Node.Buffered > 0 && honest {
			// Each is delivered once its dependency comes or DepWait
			// gives it up, then journaled (adopted) if its entry never
			// came: read before, a journal lacks what a record will hold
			// (seed 12657: an ephemeral node's signal given up 36 s
			// after the heal, after the journals were read). Signals
			// waiting only for the hostile node's (its flood's holes,
			// which never come) are not the honest mesh's: each is
			// given up in time, delivered and adopted as its own.
			return "", false, fmt.Errorf("node %d holds %d signals waiting for a dependency", i, st.Node.Buffered)
		}
		key := fmt.Sprint(d.Count, " ", d.Digest)
		if i == 0 {
			common = key
		} else if key != common {
			same = false
		}
	}
	return common, same, nil
}

// journals reads every node's journal through its API, in replay order,
// with each signal's full content.
func (c *cluster) journals(ctx context.Context) ([][]Entry, error) {
	out := make([][]Entry, len(c.procs))
	for i := range c.procs {
		var sigs []json.RawMessage
		if err := c.get(ctx, i, "/v1/replay", &sigs); err != nil {
			return out, err
		}
		for _, raw := range sigs {
			var s signalmesh.Signal
			if err := s.UnmarshalJSON(raw); err != nil {
				return out, fmt.Errorf("node %d: replay: %w", i, err)
			}
			out[i] = append(out[i], entryOf(&s))
		}
	}
	return out, nil
}

// entryOf is what the checker compares of a signal.
func entryOf(s *signalmesh.Signal) Entry {
	str := func(name string) string { v, _ := s.Extensions[name].(string); return v }
	return Entry{Source: s.Source, ID: s.ID, Type: s.Type, Cause: s.CauseID(), Peer: str(signalmesh.ExtPeer),
		Clock: str("meshclock"), Causal: str(ExtCausal), Sum: DataSum(s.Data)}
}

func (c *cluster) recorded(journals [][]Entry) error {
	for i, p := range c.procs {
		rec, err := ReadRecord(p.record)
		if err != nil {
			return err
		}
		have := map[Key]bool{}
		for _, e := range rec {
			have[e.Key()] = true
		}
		for _, e := range journals[i] {
			// The hostile node's own signals (its flood, given up on
			// predecessors that never exist) are held to no honest rule:
			// settling does not wait for them.
			if !have[e.Key()] && e.Source != HostileSource {
				return fmt.Errorf("node %d has not delivered %s yet", i, e.Key())
			}
		}
	}
	return c.groupHandled(journals)
}

// collect adds, after shutdown, the records, process ends, drop counters
// and WARN/ERROR log lines of every node.
func (c *cluster) collect(h *History) error {
	for _, p := range c.procs {
		rec, err := ReadRecord(p.record)
		if err != nil {
			return err
		}
		h.Records = append(h.Records, rec)
		h.Ends = append(h.Ends, p.ends)
		h.Counters = append(h.Counters, p.dropped)
		h.Rejected = append(h.Rejected, p.rejected)
		h.Pruned = append(h.Pruned, p.pruned)
		lines, err := warnings(filepath.Join(p.dir, "node.log"))
		if err != nil {
			return err
		}
		h.Logs = append(h.Logs, lines)
	}
	return nil
}

// warnings returns a node log's WARN and ERROR lines.
func warnings(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// nodeStatus is what the harness reads of a node's /v1/status.
type nodeStatus struct {
	Node struct {
		Peers, Subscribed, Heads, Buffered, Unjournaled int
		Relinked, BlocksRebuilt, BlocksFetched          int64
		Links                                           []struct{ Direct bool }
		Missing                                         []struct{ Origin string }
		Dropped                                         map[string]int64
	} `json:"node"`
}

// maxTrail bounds the reasons a failed settle reports.
const maxTrail = 24

// states returns a line per node of what its status says about the
// journal and the mesh: the report of a mesh that did not settle.
func (c *cluster) states(ctx context.Context) string {
	var b strings.Builder
	for i := range c.procs {
		var d struct {
			Count  int    `json:"count"`
			Digest string `json:"digest"`
		}
		var st nodeStatus
		if err := c.get(ctx, i, "/v1/digest", &d); err != nil {
			fmt.Fprintf(&b, "  node %d: %v\n", i, err)
			continue
		}
		if err := c.get(ctx, i, "/v1/status", &st); err != nil {
			fmt.Fprintf(&b, "  node %d: %v\n", i, err)
			continue
		}
		n := st.Node
		direct := 0
		for _, l := range n.Links {
			if l.Direct {
				direct++
			}
		}
		short := d.Digest
		if len(short) > 8 {
			short = short[:8]
		}
		fmt.Fprintf(&b, "  node %d: journal %d (%s), %d heads; %d peers (%d direct), %d in the topic; %d unjournaled, %d waiting for %d gaps; relinked %d; blocks rebuilt %d, fetched %d; dropped %v\n",
			i, d.Count, short, n.Heads, n.Peers, direct, n.Subscribed, n.Unjournaled, n.Buffered, len(n.Missing), n.Relinked, n.BlocksRebuilt, n.BlocksFetched, n.Dropped)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
