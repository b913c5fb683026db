package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/internal/hostile"
)

// hostileCmd is `signalmesh hostile` (not in the usage: the fault
// harness's hostile node, see package internal/hostile). It attacks the
// mesh for -duration, or until SIGTERM, then writes its report to -report.
func hostileCmd(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("hostile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := hostile.Config{}
	fs.StringVar(&cfg.Mesh, "mesh", "", "mesh name")
	fs.StringVar(&cfg.Listen, "listen", "/ip4/127.0.0.1/tcp/0", "libp2p listen address of each identity")
	boot := fs.String("bootstrap", "", "comma-separated multiaddrs with /p2p/<id> to connect to")
	victims := fs.String("victims", "", "comma-separated peer ids of the honest nodes")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the attacks' draws")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long to attack")
	fs.IntVar(&cfg.Flood, "flood", 2000, "never-ready signals to flood")
	report := fs.String("report", "", "file to write the report to (JSON); empty: stdout")
	if err := fs.Parse(args); err != nil {
		return helpOr2(err)
	}
	if cfg.Mesh == "" || *boot == "" || *victims == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "signalmesh hostile: -mesh, -bootstrap and -victims are required, and no arguments")
		return 2
	}
	for _, b := range strings.Split(*boot, ",") {
		ai, err := peer.AddrInfoFromString(b)
		if err != nil {
			fmt.Fprintln(stderr, "signalmesh hostile: -bootstrap:", err)
			return 2
		}
		cfg.Bootstrap = append(cfg.Bootstrap, *ai)
	}
	for _, v := range strings.Split(*victims, ",") {
		id, err := peer.Decode(v)
		if err != nil {
			fmt.Fprintln(stderr, "signalmesh hostile: -victims:", err)
			return 2
		}
		cfg.Victims = append(cfg.Victims, id)
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := hostile.Run(ctx, cfg)
	b, _ := json.Marshal(rep)
	if *report == "" {
		fmt.Fprintln(os.Stdout, string(b))
	} else if err := os.WriteFile(*report, b, 0o644); err != nil {
		fmt.Fprintln(stderr, "signalmesh hostile:", err)
		return 1
	}
	if rep.Err != "" {
		fmt.Fprintln(stderr, "signalmesh hostile:", rep.Err)
		return 1
	}
	return 0
}
