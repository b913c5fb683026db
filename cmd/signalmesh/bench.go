package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/schollz/progressbar/v3"

	"github.com/signalmesh/signalmesh/bench"
)

func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: signalmesh bench [flags]

Runs the convergence benchmarks with their baselines (raw GossipSub with
default options and with signalmesh's, raw go-ds-crdt with batched Puts,
NATS core through an embedded nats-server) in the same run, each scenario
-repeat times with the systems' order rotated, prints the median and the
range of every figure with each baseline's median as a ratio to
signalmesh's (same workload only), and writes a JSON result and PNG/SVG
plots under -out. Zero values take the standard suite's sizes (with
-short, the CI suite's).

Flags:
`)
		fs.PrintDefaults()
	}
	var spec bench.Spec
	scenarios := fs.String("scenarios", strings.Join(bench.AllScenarios, ","), "comma-separated scenarios to run; also "+strings.Join(bench.ExtraScenarios, ",")+" when named")
	fs.BoolVar(&spec.Processes, "processes", false, "run every peer in an OS process of its own")
	fs.Uint64Var(&spec.Seed, "seed", 1, "seed for every random choice (sides, churn, payloads)")
	fs.IntVar(&spec.Payload, "payload", 0, "data bytes per signal (default 100)")
	fs.IntVar(&spec.Peers, "peers", 0, "peers in partition, rejoin, burst, steady, mixed, churn, history (default 8, short 3)")
	fs.IntVar(&spec.Groups, "groups", 0, "sides the partition cuts the peers into (default 2)")
	fs.IntVar(&spec.PerSide, "per-side", 0, "signals per side of the partition (default 10000, short 100)")
	fs.IntVar(&spec.Rejoin, "rejoin", 0, "signals written while one peer is away (default 1000, short 100)")
	fs.IntVar(&spec.Burst, "burst", 0, "signals in the burst (default 10000, short 500)")
	fs.IntVar(&spec.Durable, "durable", 0, "signals in each durable-publish run (default 100000, short 1000)")
	fs.IntVar(&spec.Repeat, "repeat", 0, "runs of each scenario, the systems' order rotated; figures are medians (default 5, short 1)")
	fs.IntVar(&spec.Rate, "rate", 0, "signals per second in steady, mixed and churn (default 1000, short 200)")
	fs.Float64Var(&spec.Seconds, "seconds", 0, "length of steady, mixed and churn in seconds (default 5, short 1)")
	scaleN := fs.String("scale-n", "", "peer counts of the scale sweep (default 2,4,8,16,32; short 2,3)")
	fs.IntVar(&spec.ScalePerSide, "scale-per-side", 0, "signals per side in the scale and history sweeps (default 1000, short 50)")
	fs.IntVar(&spec.ScaleBurst, "scale-burst", 0, "burst size in the scale sweep (default 2000, short 200)")
	history := fs.String("history", "", "journal lengths of the history sweep (default 0,10000,50000; short 0,500)")
	catchUp := fs.String("catchup", "", "journal sizes a fresh peer catches up on in the catchup scenario (default 100000,1000000; short 2000)")
	reopen := fs.String("reopen", "", "journal sizes the reopen scenario reopens (default 20000,200000; short 2000)")
	join := fs.String("join", "", "journal sizes (signals ever published) a fresh peer joins in the join scenario (default 10000,100000,1000000; short 2000)")
	fs.IntVar(&spec.JoinRetained, "join-retained", 0, "of those, how many are within retention in the join scenario (default 10000, short 200)")
	fs.IntVar(&spec.RetentionPeers, "retention-peers", 0, "peers of the retention scenario (default 4, short 3)")
	fs.DurationVar(&spec.RetentionKeep, "retention-keep", 0, "retention (age) in the retention scenario (default 1m, short 5s)")
	fs.DurationVar(&spec.RetentionFor, "retention-for", 0, "length of the retention scenario (default 10m, short 20s)")
	fs.BoolVar(&spec.Short, "short", false, "small counts, slowest baselines skipped (CI)")
	out := fs.String("out", "bench-results", "directory for the JSON result and the plots")
	quiet := fs.Bool("quiet", false, "no progress bar")
	shape := fs.String("shape", "", `shape every link with a tc qdisc, e.g. "netem delay 10ms 2ms loss 0.5%" or
"tbf rate 100mbit burst 64kb latency 50ms": the run moves into a new network namespace
whose loopback carries the qdisc (needs root, unshare, ip and tc; netem needs the
kernel's sch_netem)`)
	if err := fs.Parse(args); err != nil {
		return helpOr2(err)
	}
	var err error
	if fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	spec.Scenarios = strings.Split(*scenarios, ",")
	if err == nil {
		spec.ScaleN, err = ints(*scaleN)
	}
	if err == nil {
		spec.History, err = ints(*history)
	}
	if err == nil {
		spec.CatchUp, err = ints(*catchUp)
	}
	if err == nil {
		spec.Reopen, err = ints(*reopen)
	}
	if err == nil {
		spec.Join, err = ints(*join)
	}
	if err == nil {
		err = spec.WithDefaults().Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench:", err)
		return 2
	}
	if *shape != "" && os.Getenv(netnsEnv) == "" {
		return inNetns(*shape, args, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bar := progressbar.NewOptions(spec.Steps(), progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("bench"),
		progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish())
	if *quiet {
		bar = progressbar.NewOptions(spec.Steps(), progressbar.OptionSetWriter(io.Discard))
	}
	step := 0
	res, err := bench.Run(ctx, spec, func(s string) {
		if step > 0 {
			_ = bar.Add(1)
		}
		step++
		bar.Describe(fmt.Sprintf("bench: %-12s", s))
	})
	_ = bar.Finish()
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench:", err)
		return 1
	}
	res.Shape = *shape
	res.Summary(stdout)
	path, err := res.WriteJSON(*out)
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench: write result:", err)
		return 1
	}
	fmt.Fprintln(stdout, "result:", path)
	files, err := res.Plot(*out)
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench:", err)
		return 1
	}
	if len(files) > 0 {
		fmt.Fprintln(stdout, "plots:", strings.Join(files, " "))
	}
	return 0
}

// ints parses "2,4,8"; empty is nil.
func ints(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, n)
	}
	return out, nil
}

const netnsEnv = "SIGNALMESH_BENCH_NETNS"

// inNetns runs this same command again in a new network namespace whose
// loopback interface has the qdisc; the namespace, and the shaping, end
// with the command, whatever way it ends.
func inNetns(qdisc string, args []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench:", err)
		return 1
	}
	script := `ip link set lo up || exit 1
tc qdisc add dev lo root ` + qdisc + ` || { echo "signalmesh bench: tc refused the qdisc (for netem, the kernel needs sch_netem)" >&2; exit 1; }
exec "$@"`
	cmd := exec.Command("unshare", append([]string{"--net", "--", "/bin/sh", "-c", script, "sh", exe, "bench"}, args...)...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(stderr, "signalmesh bench: -shape needs root, unshare, ip and tc:", err)
		return 1
	}
	return 0
}
