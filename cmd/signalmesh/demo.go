package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bench"
	"github.com/signalmesh/signalmesh/node"
)

type demoPeer struct {
	name  string
	n     *node.Node
	gater *node.Blocklist
	mu    sync.Mutex
	got   int
	order map[string]int // signal id -> delivery position
	bad   []string       // duplicates and effects seen before their cause
}

func (p *demoPeer) handle(_ context.Context, s *signalmesh.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.order[s.ID]; dup {
		p.bad = append(p.bad, "duplicate "+s.ID)
	}
	if c := s.CauseID(); c != "" {
		if _, ok := p.order[c]; !ok {
			p.bad = append(p.bad, "effect "+s.ID+" before its cause "+c)
		}
	}
	p.order[s.ID] = p.got
	p.got++
	return nil
}

func (p *demoPeer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

// demo runs a local mesh of four peers in this process, each with an
// on-disk store in a temporary directory: it publishes, cuts the mesh in
// two, publishes on both sides (causes and their effects), heals, and
// prints what converged.
func demo(ctx context.Context, w io.Writer, perSide int) error {
	dir, err := os.MkdirTemp("", "signalmesh-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mesh := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	names := []string{"eu-1", "eu-2", "us-1", "us-2"}
	peers := make([]*demoPeer, len(names))
	for i, name := range names {
		g := node.NewBlocklist()
		n, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dir + "/" + name, Gater: g, Logger: quiet,
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			return err
		}
		defer n.Close()
		p := &demoPeer{name: name, n: n, gater: g, order: map[string]int{}}
		peers[i] = p
		if _, err := n.Subscribe("**", p.handle); err != nil {
			return err
		}
	}
	connect := func() error {
		for i, a := range peers {
			for _, b := range peers[i+1:] {
				if err := a.n.Connect(ctx, b.n.AddrInfo()); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := connect(); err != nil {
		return err
	}
	fmt.Fprintf(w, "mesh %q: 4 peers on 127.0.0.1, stores under %s\n", mesh, dir)

	hello, _ := signalmesh.New("mesh.hello", "/demo/eu-1", "hello, mesh")
	if err := peers[0].n.Publish(ctx, hello); err != nil {
		return err
	}
	if err := await(ctx, 10*time.Second, func() bool { return allGot(peers, 1) && identical(ctx, peers, 1) }); err != nil {
		return fmt.Errorf("first signal: %w", err)
	}
	fmt.Fprintln(w, "eu-1 published mesh.hello: delivered and journaled on all 4 peers")

	left, right := peers[:2], peers[2:]
	for _, a := range left {
		for _, b := range right {
			a.gater.Block(b.n.ID())
			b.gater.Block(a.n.ID())
			_ = a.n.Disconnect(b.n.ID())
		}
	}
	fmt.Fprintln(w, "\npartition: {eu-1, eu-2} | {us-1, us-2}")
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, side := range [][]*demoPeer{left, right} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- publishSide(ctx, side, perSide)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	want := 1 + 2*perSide
	if err := await(ctx, 30*time.Second, func() bool { return journalsAt(ctx, left, 1+perSide) && journalsAt(ctx, right, 1+perSide) }); err != nil {
		printPeers(ctx, w, peers, "sides did not converge")
		return fmt.Errorf("sides: %w", err)
	}
	printPeers(ctx, w, peers, "while cut, each side has its own signals")

	for _, p := range peers {
		p.gater.Clear()
	}
	healed := time.Now()
	if err := connect(); err != nil {
		return err
	}
	if err := await(ctx, 60*time.Second, func() bool { return identical(ctx, peers, want) }); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	took := time.Since(healed)
	if err := await(ctx, 30*time.Second, func() bool { return allGot(peers, want) }); err != nil {
		return fmt.Errorf("deliveries after heal: %w", err)
	}
	fmt.Fprintf(w, "\nheal: journals identical on all 4 peers %v after reconnecting\n", took.Round(time.Millisecond))
	printPeers(ctx, w, peers, "after the heal")
	for _, p := range peers {
		p.mu.Lock()
		bad := p.bad
		p.mu.Unlock()
		if len(bad) > 0 {
			return fmt.Errorf("%s: %v", p.name, bad)
		}
	}
	fmt.Fprintf(w, "\nnothing lost: every peer holds and delivered all %d signals, each once, causes before effects\n", want)
	return nil
}

// publishSide publishes perSide signals on one side of the cut: half are
// orders from the first peer, half payments from the second, each caused
// by an order the second peer has delivered.
func publishSide(ctx context.Context, side []*demoPeer, perSide int) error {
	a, b := side[0], side[1]
	orders := make([]*signalmesh.Signal, perSide/2)
	for i := range orders {
		orders[i], _ = signalmesh.New("order."+a.name+".created", "/demo/"+a.name, map[string]int{"n": i})
	}
	if err := a.n.Publish(ctx, orders...); err != nil {
		return err
	}
	if err := await(ctx, 20*time.Second, func() bool {
		for _, o := range orders {
			if _, err := b.n.Get(ctx, o.ID); err != nil {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	pays := make([]*signalmesh.Signal, perSide-len(orders))
	for i := range pays {
		pays[i], _ = signalmesh.New("payment."+b.name+".captured", "/demo/"+b.name, nil, signalmesh.WithCause(orders[i%len(orders)]))
	}
	return b.n.Publish(ctx, pays...)
}

func printPeers(ctx context.Context, w io.Writer, peers []*demoPeer, title string) {
	fmt.Fprintf(w, "%s:\n", title)
	for _, p := range peers {
		count, digest, _ := p.n.JournalDigest(ctx)
		st, _ := p.n.Status(ctx)
		fmt.Fprintf(w, "  %-5s journal %5d  digest %s  delivered %5d  deduped %5d  waiting %d\n",
			p.name, count, digest[:12], p.count(), st.Deduped, st.Buffered)
	}
}

// await polls cond until it holds, ctx ends or timeout passes.
func await(ctx context.Context, timeout time.Duration, cond func() bool) error {
	_, err := bench.Await(ctx, timeout, cond)
	return err
}

func allGot(peers []*demoPeer, n int) bool {
	for _, p := range peers {
		if p.count() < n {
			return false
		}
	}
	return true
}

func journalsAt(ctx context.Context, peers []*demoPeer, n int) bool {
	for _, p := range peers {
		if c, _, err := p.n.JournalDigest(ctx); err != nil || c != n {
			return false
		}
	}
	return true
}

func identical(ctx context.Context, peers []*demoPeer, n int) bool {
	first := ""
	for i, p := range peers {
		c, d, err := p.n.JournalDigest(ctx)
		if err != nil || c != n || (i > 0 && d != first) {
			return false
		}
		first = d
	}
	return true
}
