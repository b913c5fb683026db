package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/signalmesh/signalmesh/chaos"
)

const chaosUsage = `Usage: signalmesh chaos [flags]

Runs seeded fault schedules against signalmesh node processes: each node in
a network namespace of its own (as root with ip; else on loopback with
connection gaters, and it says so). Faults are drawn from the seed, some
overlapping: partitions (halves, one node isolated, a bridge node,
flapping, one-way), kill -9 and restart on the same data directory, clean
restarts, SIGSTOP/SIGCONT (also past the client's timeout), slow links, a
kill -9 while the mesh settles. The workload publishes at every consistency
level with cause->effect chains, and its parts (-parts) are drawn from the
seed: ephemeral in-memory nodes that publish and leave for good,
out-of-band causes, slow subscribers with small queues, a small causal
buffer, ids reused under another source, retries of unknown outcomes on
another node, a chain bootstrap, a consumer group member on every node
(a drawn strategy, a 1-2 s lease). Then it heals, waits for quiescence,
probes every node, and checks by (source, id), from the journals, what
every node's persistent subscription recorded, its counters and its logs:
nothing acknowledged is lost, journals are identical and hold what was
published, each origin's sequences in order and complete, every delivery
after its causal past and journaled, redeliveries only right after a
kill -9, each signal handled by the group at least once and more than
once only inside a failover window, no errors from live nodes, no
unexplained drops or warnings (see package chaos, Rules). It prints a verdict per schedule; on a failure, the
seed and the smallest history that shows it. Exit code 1 if any schedule
fails. -replay runs a result file's schedules again; -shrink makes failed
ones smaller.

-topology nat runs the nodes in a NAT topology of namespaces (root, ip and
iptables; no fallback): the first node public (the first two from 7
nodes), a circuit relay every other node bootstraps to and keeps a
reservation on; the others, the edges, behind two NAT routers that keep
a host's port (hole punching can make their links direct) and, from five
nodes, one edge behind a symmetric one (its links stay relayed); the
routers drop unsolicited inbound packets. A cut drops what the cut-off
node sends wherever it goes (on a LAN, through the NATs, hole-punched),
at the receiver; a circuit through a relay is cut with the relay's own
links, which every fault but a bridge on a relay node cuts too. The
report says, per schedule, which links between edges were direct (on a
LAN, hole-punched) and which relayed at the end.

Everything it starts (processes, namespaces, links, directories) is removed
when it ends, also on SIGINT; -cleanup removes what a killed run left.

Flags:
`

func chaosCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, chaosUsage); fs.PrintDefaults() }
	var spec chaos.Spec
	fs.IntVar(&spec.Nodes, "nodes", 0, "node processes, 3 to 9 (default 5, short 3)")
	fs.Uint64Var(&spec.Seed, "seed", 1, "seed of the first schedule; schedule k uses seed+k")
	fs.IntVar(&spec.Schedules, "schedules", 0, "schedules to run (default 1, short 3)")
	fs.DurationVar(&spec.Duration, "duration", 0, "workload length of each schedule (default 20s, short 12s)")
	fs.IntVar(&spec.Rate, "rate", 0, "publishes per second over all nodes (default 40, short 20)")
	fs.DurationVar(&spec.Settle, "settle", 0, "longest wait for quiescence after the heal (default 120s, short 30s)")
	fs.StringVar(&spec.Network, "network", "auto", "auto, netns or loopback")
	fs.StringVar(&spec.Topology, "topology", "flat", "flat (one bridge) or nat (public relays, edges behind NAT routers; namespaces and iptables)")
	kinds := fs.String("faults", "", "comma-separated faults to draw from (default all: "+kindList()+")")
	fs.BoolVar(&spec.Short, "short", false, "the CI sizes: 3 schedules of 3 nodes for 12 s, 4 ephemeral nodes each")
	fs.BoolVar(&spec.Cover, "cover", false, "deal every fault kind to the schedules, each once, instead of drawing kinds")
	ephemeral := fs.Int("ephemeral", -1, "ephemeral nodes per schedule; -1: 50, short 4")
	parts := fs.String("parts", "", "workload parts, comma-separated (default all: "+strings.Join(partNames, ",")+"); \"none\" for none")
	fs.IntVar(&spec.Parts.Outage, "outage", 0, "the long-outage schedule: one node isolated while this many signals are published (no other faults; not for CI)")
	shrink := fs.String("shrink", "", "after the run, shrink each failed schedule while an anomaly of this kind persists (fewer faults, ephemeral nodes, rate, duration, parts); the smallest specs go to <out>.shrunk.json")
	tries := fs.Int("shrink-tries", 12, "most runs the shrinker makes per failed schedule")
	replay := fs.String("replay", "", "run again the schedules of a result file (-out), with their specs and seeds")
	fs.StringVar(&spec.Dir, "dir", "", "directory for the nodes' data (default a temporary one)")
	fs.BoolVar(&spec.Keep, "keep", false, "keep the nodes' data, logs and records")
	out := fs.String("out", "", "write the results as JSON to this file")
	quiet := fs.Bool("quiet", false, "no progress lines")
	cleanup := fs.Bool("cleanup", false, "only remove the namespaces, links and directories of killed runs, then exit")
	if err := fs.Parse(args); err != nil {
		return helpOr2(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "signalmesh chaos: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *cleanup {
		for _, r := range chaos.CleanStale() {
			fmt.Fprintln(stdout, "removed", r)
		}
		return 0
	}
	if err := setParts(&spec, *parts, *ephemeral); err != nil {
		fmt.Fprintln(stderr, "signalmesh chaos:", err)
		return 2
	}
	if *kinds != "" {
		for _, k := range strings.Split(*kinds, ",") {
			spec.Kinds = append(spec.Kinds, chaos.Kind(strings.TrimSpace(k)))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh chaos:", err)
		return 1
	}
	spec.Command = []string{exe, "node"}
	if os.Getenv("SIGNALMESH_TEST_RUN") == "1" { // this is a test binary standing in for signalmesh
		spec.Env = []string{"SIGNALMESH_TEST_RUN=1"}
	}
	if !*quiet {
		spec.Log = stderr
	}
	if err := spec.WithDefaults().Validate(); err != nil {
		fmt.Fprintln(stderr, "signalmesh chaos:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	var partial []chaos.Result
	if *out != "" {
		spec.OnResult = func(r chaos.Result) {
			partial = append(partial, r)
			b, _ := json.MarshalIndent(partial, "", "  ")
			_ = os.WriteFile(filepath.Clean(*out), b, 0o644)
		}
	}
	var results []chaos.Result
	if *replay != "" {
		results, err = replayRun(ctx, *replay, spec)
	} else {
		results, err = chaos.Run(ctx, spec)
	}
	failed := chaosReport(stdout, results, time.Since(start))
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if werr := os.WriteFile(filepath.Clean(*out), b, 0o644); werr != nil {
			fmt.Fprintln(stderr, "signalmesh chaos:", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh chaos:", err)
		return 1
	}
	if *shrink != "" {
		if err := shrinkRun(ctx, spec, results, *shrink, *tries, *out, stdout); err != nil {
			fmt.Fprintln(stderr, "signalmesh chaos:", err)
			return 1
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// partNames are the switchable workload parts (-parts).
var partNames = []string{"ephemeral", "out-of-band", "slow-subscriber", "limits", "reuse", "retry", "partial-mesh", "group", "hostile", "retention"}

// setParts reads -parts and -ephemeral into spec.Parts.
func setParts(spec *chaos.Spec, list string, ephemeral int) error {
	p := chaos.DefaultParts(spec.Short)
	if list != "" {
		outage := spec.Parts.Outage
		eph := p.Ephemeral
		p = chaos.Parts{Outage: outage}
		for _, name := range strings.Split(list, ",") {
			switch strings.TrimSpace(name) {
			case "none":
			case "ephemeral":
				p.Ephemeral = eph
			case "out-of-band":
				p.OutOfBand = true
			case "slow-subscriber":
				p.SlowSubscriber = true
			case "limits":
				p.Limits = true
			case "reuse":
				p.Reuse = true
			case "retry":
				p.Retry = true
			case "partial-mesh":
				p.PartialMesh = true
			case "group":
				p.Group = true
			case "hostile":
				p.Hostile = true
			case "retention":
				p.Retention = true
			default:
				return fmt.Errorf("unknown workload part %q (want %s)", name, strings.Join(partNames, ","))
			}
		}
	}
	p.Outage = spec.Parts.Outage
	if ephemeral >= 0 {
		p.Ephemeral = ephemeral
	}
	p.None = p == chaos.Parts{}
	spec.Parts = p
	return nil
}

// replayRun runs each schedule of a result file again: its spec, with its
// seed, as one schedule (the command's -nodes, -network and such are
// ignored; -keep, -dir and -quiet apply).
func replayRun(ctx context.Context, path string, base chaos.Spec) ([]chaos.Result, error) {
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	var prev []chaos.Result
	if err := json.Unmarshal(b, &prev); err != nil {
		return nil, fmt.Errorf("replay %s: %w", path, err)
	}
	var out []chaos.Result
	for _, r := range prev {
		s := r.Spec
		s.Command, s.Env, s.Log, s.Dir, s.Keep, s.OnResult = base.Command, base.Env, base.Log, base.Dir, base.Keep, base.OnResult
		s.Seed, s.Schedules = r.Seed, 1
		if s.Cover { // the deal depends on the schedule's index in its run
			return out, fmt.Errorf("replay: seed %d comes from a -cover run; run it again with the same -seed and -schedules", r.Seed)
		}
		res, err := chaos.Run(ctx, s)
		out = append(out, res...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// shrinkRun shrinks each failed result that shows kind and reports the
// smallest spec found; with out, writes them (as results) to
// <out>.shrunk.json, which -replay runs.
func shrinkRun(ctx context.Context, spec chaos.Spec, results []chaos.Result, kind string, tries int, out string, w io.Writer) error {
	var shrunk []chaos.Result
	one := func(ctx context.Context, s chaos.Spec) (chaos.Result, error) {
		s.OnResult = nil
		rs, err := chaos.Run(ctx, s)
		if len(rs) == 0 {
			return chaos.Result{}, err
		}
		return rs[0], err
	}
	for _, r := range results {
		if r.Verdict.OK || !slices.ContainsFunc(r.Verdict.Anomalies, func(a chaos.Anomaly) bool { return a.Kind == kind }) {
			continue
		}
		s := r.Spec
		s.Command, s.Env, s.Log, s.Dir, s.Keep = spec.Command, spec.Env, spec.Log, spec.Dir, spec.Keep
		best, res, runs := chaos.Shrink(ctx, s, r, kind, tries, one)
		res.Spec = best
		shrunk = append(shrunk, res)
		fmt.Fprintf(w, "seed %d shrunk in %d runs (%s persists): %d faults %v, rate %d, %v, parts %+v\n",
			r.Seed, runs, kind, len(best.Faults), best.Faults, best.Rate, best.Duration, best.Parts)
	}
	if out == "" || len(shrunk) == 0 {
		return nil
	}
	b, _ := json.MarshalIndent(shrunk, "", "  ")
	return os.WriteFile(filepath.Clean(out)+".shrunk.json", b, 0o644)
}

func kindList() string {
	var s []string
	for _, k := range chaos.AllKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ",")
}

// chaosReport prints a verdict per schedule and the totals; it returns the
// number of failed schedules.
func chaosReport(w io.Writer, results []chaos.Result, took time.Duration) int {
	failed := 0
	faults := map[chaos.Kind]int{}
	var published, acked, journaled, redelivered, effects int
	anomalies := map[string]int{}
	parts := map[string]int{}
	origins := 0
	var links chaos.Links // summed over the NAT topology's schedules
	nat := false
	for _, r := range results {
		verdict := "PASS"
		if !r.Verdict.OK {
			verdict = "FAIL"
			failed++
		}
		for _, f := range r.Faults {
			faults[f.Kind]++
		}
		v := r.Verdict
		published += v.Published
		acked += v.ByOutcome[chaos.Acked]
		journaled += v.Journaled
		redelivered += v.Redelivered
		effects += v.Effects
		for p, n := range v.Parts {
			parts[p] += n
		}
		origins = max(origins, v.Origins)
		fmt.Fprintf(w, "seed %d: %s  %s; %d faults, %d origins, %d published (%d acked, %d quorum timeouts, %d unknown, %d refused), %d journaled on every replica, %d effects checked, %d redelivered after kill -9, quiescent %.1fs after the heal\n",
			r.Seed, verdict, r.Setup, len(r.Faults), v.Origins, v.Published, v.ByOutcome[chaos.Acked], v.ByOutcome[chaos.QuorumTimeout], v.ByOutcome[chaos.Unknown],
			v.ByOutcome[chaos.Refused], v.Journaled, v.Effects, v.Redelivered, r.Settled.Seconds())
		if r.Links != nil {
			fmt.Fprintf(w, "  edge links at the end: %s\n", r.Links)
			links.Direct += r.Links.Direct
			links.Relayed += r.Links.Relayed
			links.None += r.Links.None
			links.Punched += r.Links.Punched
			nat = true
		}
		if g := v.Group; g != nil {
			fmt.Fprintf(w, "  group %s: %d required, %d handled (%d handlings), %d duplicates inside failover windows (%d extra handlings), %d failover windows, %d checked for one member and order per subject\n",
				g.Strategy, g.Required, g.Handled, g.Handlings, g.Duplicates, g.Extra, g.Windows, g.Ordered)
		}
		if len(v.Pruned) > 0 && r.Setup.Doomed > 0 {
			var sig, blk []string
			for _, p := range v.Pruned {
				sig, blk = append(sig, fmt.Sprint(p["signals"])), append(blk, fmt.Sprint(p["blocks"]))
			}
			fmt.Fprintf(w, "  retention: pruned per node %s journal entries, %s blocks\n", strings.Join(sig, "/"), strings.Join(blk, "/"))
		}
		for _, a := range v.Anomalies {
			anomalies[a.Kind]++
			fmt.Fprintf(w, "  %s\n", a)
		}
		if r.Explain != "" {
			fmt.Fprintf(w, "  smallest history (seed %d):\n%s", r.Seed, r.Explain)
		}
		if r.Dir != "" {
			fmt.Fprintf(w, "  the nodes' data, logs and records are kept in %s\n", r.Dir)
		}
	}
	var fk []string
	for _, k := range chaos.AllKinds {
		if faults[k] > 0 {
			fk = append(fk, fmt.Sprintf("%s %d", k, faults[k]))
		}
	}
	net := ""
	if len(results) > 0 {
		net = results[0].Network
	}
	fmt.Fprintf(w, "\n%d schedules in %.0fs, %d failed; network: %s\nfaults: %s\nworkload parts (ops): %v; most origins in one schedule: %d\nsignals: %d published, %d acked, %d journaled, %d effects checked, %d redelivered after kill -9\nanomalies: %v\n",
		len(results), took.Seconds(), failed, net, strings.Join(fk, ", "), parts, origins, published, acked, journaled, effects, redelivered, anomalies)
	if nat {
		fmt.Fprintf(w, "edge links at the ends of the schedules: %d direct (%d hole-punched across two NATs), %d relayed, %d not connected\n",
			links.Direct, links.Punched, links.Relayed, links.None)
	}
	return failed
}
