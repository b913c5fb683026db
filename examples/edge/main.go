// Command edge is an offline edge sensor: a peer on disk that loses its
// link to the site's hub, keeps publishing readings while cut off (each one
// durable on its own disk when Publish returns), and catches up by itself
// when the link comes back: the hub ends with every reading, in order.
//
//	go run ./examples/edge [-short]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

func main() {
	short := flag.Bool("short", false, "fewer readings (CI)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *short); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

type reading struct {
	Seq   int     `json:"seq"`
	Value float64 `json:"value"`
}

func run(ctx context.Context, w io.Writer, short bool) error {
	online, offline := 50, 500
	if short {
		online, offline = 10, 100
	}
	dir, err := os.MkdirTemp("", "signalmesh-edge-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mesh := fmt.Sprintf("site-%d", time.Now().UnixNano())
	link := node.NewBlocklist() // the sensor's radio link, cut by blocking the hub
	sensor, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: filepath.Join(dir, "sensor"),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Gater: link, Logger: quiet})
	if err != nil {
		return err
	}
	defer sensor.Close()
	hub, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: filepath.Join(dir, "hub"),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return err
	}
	defer hub.Close()

	// The hub's dashboard: a named (persistent) subscription to readings.
	var mu sync.Mutex
	var got []int
	if _, err := hub.Subscribe("sensor.temperature", func(_ context.Context, s *signalmesh.Signal) error {
		var r reading
		if err := s.DecodeData(&r); err != nil {
			return err
		}
		mu.Lock()
		got = append(got, r.Seq)
		mu.Unlock()
		return nil
	}, node.WithName("dashboard")); err != nil {
		return err
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	if err := sensor.Connect(ctx, hub.AddrInfo()); err != nil {
		return err
	}

	seq := 0
	publish := func(n int) error {
		for range n {
			seq++
			s, _ := signalmesh.New("sensor.temperature", "/site/freezer-3", reading{Seq: seq, Value: -18 + float64(seq%7)/10},
				signalmesh.WithSubject("freezer-3"))
			if err := sensor.Publish(ctx, s); err != nil { // durable on the sensor's disk when it returns
				return err
			}
		}
		return nil
	}
	if err := publish(online); err != nil {
		return err
	}
	if err := await(ctx, func() bool { return count() == online }); err != nil {
		return fmt.Errorf("online readings: %w", err)
	}
	fmt.Fprintf(w, "online: the hub has %d readings\n", count())

	link.Block(hub.ID())
	_ = sensor.Disconnect(hub.ID())
	if err := publish(offline); err != nil {
		return err
	}
	st, _ := sensor.Status(ctx)
	fmt.Fprintf(w, "link down: the sensor published %d more (%d in all, each on its disk when Publish returned); the hub still has %d\n",
		offline, st.Published, count())
	if count() != online {
		return errors.New("readings crossed a cut link")
	}

	link.Clear()
	back := time.Now()
	if err := sensor.Connect(ctx, hub.AddrInfo()); err != nil {
		return err
	}
	if err := await(ctx, func() bool { return count() == online+offline }); err != nil {
		return fmt.Errorf("catching up: the hub has %d of %d: %w", count(), online+offline, err)
	}
	fmt.Fprintf(w, "link up: the hub caught up with %d readings in %v\n", offline, time.Since(back).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	for i, s := range got {
		if s != i+1 {
			return fmt.Errorf("reading %d delivered as number %d: out of order", s, i+1)
		}
	}
	fmt.Fprintf(w, "ok: all %d readings, each once, in the order the sensor took them\n", len(got))
	return nil
}

func await(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
