// Command signalmesh is the signalmesh command line.
//
// For now it has one subcommand, demo, a tour of the pure core: signals,
// the type router and causal delivery with vector clocks. The node work
// replaces it with a local mesh of libp2p peers.
//
//	signalmesh demo [-seed N]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `signalmesh: event signals that replicate peer-to-peer

Usage:
  signalmesh demo [-seed N]   tour of signals, the router and causal delivery
  signalmesh help             this text
`

func main() {
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
		seed := fs.Uint64("seed", 1, "seed for the order in which signals reach the peers")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "signalmesh demo: unexpected argument %q\n", fs.Arg(0))
			return 2
		}
		if err := demo(stdout, *seed); err != nil {
			fmt.Fprintln(stderr, "signalmesh demo:", err)
			return 1
		}
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "signalmesh: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
