// Command signalmesh is the signalmesh command line: a daemon that runs a
// peer with an HTTP API and a bridge, clients of that API, a local demo and
// the benchmark harness.
//
//	signalmesh node [flags]          run a peer until SIGINT/SIGTERM
//	signalmesh publish TYPE [DATA]   publish through a running node
//	signalmesh tail [PATTERN]        stream what a node delivers (reconnects, resumes)
//	signalmesh replay [PATTERN]      stream a node's journal
//	signalmesh digest                a node's journal digest
//	signalmesh status                a node's status
//	signalmesh version               the build's module version
//	signalmesh demo [-signals N]     a local mesh of 4 peers: publish, partition, heal
//	signalmesh tour [-seed N]        the pure core: signals, router, causal delivery
//	signalmesh bench [flags]         benchmarks with baselines, JSON results, plots
//
// Exit codes: 0 success, 1 failure (an unreachable node, a failed run), 2
// bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/signalmesh/signalmesh/bench"
)

const usage = `signalmesh: event signals that replicate peer-to-peer

Usage:
  signalmesh node [flags]       run a peer with an HTTP API (publish, tail, status,
                                metrics, bridge ingress) until SIGINT or SIGTERM
  signalmesh publish TYPE [DATA] [flags]
                                publish a signal through a running node
                                (-count N: N signals)
  signalmesh tail [PATTERN]     print the signals a running node delivers;
                                reconnects and resumes where it left off
  signalmesh replay [PATTERN]   print a running node's journal in replay order
                                (-after ID, -since TIME)
  signalmesh digest             print a running node's journal digest and size
  signalmesh status             print a running node's status
  signalmesh demo [-signals N]  run a local mesh of 4 peers: publish, cut it in
                                two, publish on both sides, heal, show what converged
  signalmesh tour [-seed N]     tour of signals, the router and causal delivery
  signalmesh bench [flags]      convergence benchmarks next to raw GossipSub,
                                go-ds-crdt and NATS in the same run
  signalmesh chaos [flags]      fault injection: node processes, network cuts,
                                kill -9, pauses; a checker that nothing was lost
  signalmesh version            the module version and VCS revision of this build
  signalmesh help               this text

Each command takes -h. Exit codes: 0 success, 1 failure, 2 bad usage.
`

func main() {
	if bench.IsAgent() { // a peer that `signalmesh bench -processes` started
		os.Exit(bench.AgentMain())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code
// (0 success, 1 failure, 2 bad usage).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		fs := flag.NewFlagSet("demo", flag.ContinueOnError)
		fs.SetOutput(stderr)
		perSide := fs.Int("signals", 200, "signals published on each side of the partition")
		if err := fs.Parse(args[1:]); err != nil {
			return helpOr2(err)
		}
		if fs.NArg() > 0 || *perSide < 2 {
			fmt.Fprintln(stderr, "signalmesh demo: -signals must be at least 2, and no arguments")
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := demo(ctx, stdout, *perSide); err != nil {
			fmt.Fprintln(stderr, "signalmesh demo:", err)
			return 1
		}
		return 0
	case "tour":
		fs := flag.NewFlagSet("tour", flag.ContinueOnError)
		fs.SetOutput(stderr)
		seed := fs.Uint64("seed", 1, "seed for the order in which signals reach the peers")
		if err := fs.Parse(args[1:]); err != nil {
			return helpOr2(err)
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "signalmesh tour: unexpected argument %q\n", fs.Arg(0))
			return 2
		}
		if err := tour(stdout, *seed); err != nil {
			fmt.Fprintln(stderr, "signalmesh tour:", err)
			return 1
		}
		return 0
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "node":
		return nodeCmd(args[1:], stdout, stderr)
	case "chaos":
		return chaosCmd(args[1:], stdout, stderr)
	case "hostile": // the fault harness's hostile node; not in the usage
		return hostileCmd(args[1:], stdout, stderr)
	case "publish":
		return publishCmd(args[1:], stdout, stderr)
	case "tail":
		return tailCmd(args[1:], stdout, stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "replay":
		return replayCmd(args[1:], stdout, stderr)
	case "digest":
		return digestCmd(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return versionCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "signalmesh: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// helpOr2 is the exit code after a flag parse error: 0 for -h, 2 otherwise.
func helpOr2(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
