package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/signalmesh/signalmesh/bench"
)

func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var spec bench.Spec
	scenarios := fs.String("scenarios", "partition,rejoin,burst,steady,durable", "comma-separated scenarios to run")
	fs.IntVar(&spec.Peers, "peers", 0, "peers in the partition and burst scenarios (default 5, short 3)")
	fs.IntVar(&spec.PerSide, "per-side", 0, "signals per side of the partition, and written while a peer is away (default 1000, short 100)")
	fs.IntVar(&spec.Burst, "burst", 0, "signals in the burst (default 10000, short 500)")
	fs.IntVar(&spec.Durable, "durable", 0, "signals in the durable-publish run (default 20000, short 1000)")
	fs.IntVar(&spec.Rate, "rate", 0, "signals per second in the steady scenario (default 1000, short 200)")
	fs.Float64Var(&spec.Seconds, "seconds", 0, "length of the steady scenario (default 10, short 2)")
	fs.BoolVar(&spec.Short, "short", false, "small counts, slowest baseline skipped (CI)")
	out := fs.String("out", "bench-results", "directory for the JSON result")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || spec.Peers < 0 || spec.PerSide < 0 || spec.Burst < 0 || spec.Durable < 0 || spec.Rate < 0 || spec.Seconds < 0 || spec.Peers == 1 {
		fmt.Fprintln(stderr, "signalmesh bench: counts must be positive (peers at least 2), and no arguments")
		return 2
	}
	spec.Scenarios = strings.Split(*scenarios, ",")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, spec, func(sc string, i, n int) {
		fmt.Fprintf(stderr, "[%d/%d] %s ...\n", i+1, n, sc)
	})
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench:", err)
		return 1
	}
	res.Summary(stdout)
	path, err := res.WriteJSON(*out)
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh bench: write result:", err)
		return 1
	}
	fmt.Fprintln(stdout, "result:", path)
	return 0
}
