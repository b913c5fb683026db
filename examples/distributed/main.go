// Command distributed is the "distributing events across nodes" recipe
// done by signalmesh: user and order events published on any of three
// peers reach subscribers on all of them, once each and causes first;
// peers coming and going are reported; health is a Status call; bulk
// publishing is one call. No broker, no cluster manager.
//
//	go run ./examples/distributed [-short]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

func main() {
	short := flag.Bool("short", false, "fewer signals (CI)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *short); err != nil {
		fmt.Fprintln(os.Stderr, "distributed:", err)
		os.Exit(1)
	}
}

// handled records, per peer, what its subscriber saw, in order.
type handled struct {
	mu    sync.Mutex
	seen  map[string]int
	order []string
	slow  map[string]time.Duration // work a handler does, by signal type, before it records
}

func run(ctx context.Context, w io.Writer, short bool) error {
	bulk := 5000
	if short {
		bulk = 500
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mesh := fmt.Sprintf("shop-%d", time.Now().UnixNano())
	names := []string{"web-1", "web-2", "worker-1"}
	nodes := make([]*node.Node, len(names))
	logs := make([]*handled, len(names))
	mon := &monitor{seen: map[string][]peer.ID{}}
	for i := range nodes {
		n, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet,
			// Middleware on every peer, like the recipe's logger middleware.
			PublishMiddleware: []node.PublishMiddleware{func(next node.PublishFunc) node.PublishFunc {
				return func(ctx context.Context, c node.Consistency, sigs []*signalmesh.Signal) error {
					for _, s := range sigs {
						_ = s.SetExtension("app", "shop")
					}
					return next(ctx, c, sigs)
				}
			}}})
		if err != nil {
			return err
		}
		defer n.Close()
		nodes[i] = n
		h := &handled{seen: map[string]int{}}
		if names[i] == "worker-1" {
			// The worker sends the welcome email: its handler of
			// user.registered takes a while, as real handlers do.
			h.slow = map[string]time.Duration{"user.registered": 100 * time.Millisecond}
		}
		logs[i] = h
		// Peer up/down monitoring: libp2p tells each node about connections.
		name := names[i]
		nb := &network.NotifyBundle{
			DisconnectedF: func(_ network.Network, c network.Conn) {
				if len(n.Host().Network().ConnsToPeer(c.RemotePeer())) == 0 {
					mon.down(name, c.RemotePeer())
				}
			},
		}
		n.Host().Network().Notify(nb)
		defer n.Host().Network().StopNotify(nb)
		// One subscription for the user and order events: causal order
		// holds within a subscription. Two subscriptions (user.** and
		// order.**) would run on two goroutines, and the order handler
		// could run before the user handler had finished with its cause.
		if _, err := n.Subscribe("**", h.record); err != nil {
			return err
		}
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			if err := nodes[i].Connect(ctx, nodes[j].AddrInfo()); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(w, "3 peers up: %s, %s, %s (one mesh, no broker)\n", names[0], names[1], names[2])

	// User and order events from different peers; the order's payment names
	// its cause, and every peer delivers the cause first.
	user, _ := signalmesh.New("user.registered", "/web-1", map[string]string{"email": "ada@example.com"}, signalmesh.WithSubject("u-1"))
	order, _ := signalmesh.New("order.created", "/web-2", map[string]any{"user": "u-1", "total": 42}, signalmesh.WithSubject("o-1"), signalmesh.WithCause(user))
	paid, _ := signalmesh.New("order.paid", "/worker-1", map[string]any{"order": "o-1"}, signalmesh.WithSubject("o-1"), signalmesh.WithCause(order))
	for i, s := range []*signalmesh.Signal{user, order, paid} {
		if err := waitDelivered(ctx, logs[i], s.CauseID()); err != nil {
			return err
		}
		if err := nodes[i].Publish(ctx, s); err != nil {
			return err
		}
	}
	// A retried publish (the same signal again, as after a timeout) is
	// deduplicated: nobody handles it twice.
	if err := nodes[1].Publish(ctx, order); err != nil {
		return err
	}

	// Batching: thousands of signals in one call, one disk write.
	batch := make([]*signalmesh.Signal, bulk)
	for i := range batch {
		batch[i], _ = signalmesh.New("user.activity.viewed", "/web-1", map[string]int{"page": i}, signalmesh.WithSubject("u-1"))
	}
	start := time.Now()
	if err := nodes[0].Publish(ctx, batch...); err != nil {
		return err
	}
	want := 3 + bulk
	if err := await(ctx, func() bool {
		for _, h := range logs {
			if h.distinct() != want {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d signals published as one batch reached all 3 peers in %v\n", bulk, time.Since(start).Round(time.Millisecond))

	// Check what every peer saw: each signal once, causes before effects.
	for i, h := range logs {
		h.mu.Lock()
		dups := 0
		for _, n := range h.seen {
			dups += n - 1
		}
		pos := map[string]int{}
		for k, id := range h.order {
			pos[id] = k
		}
		h.mu.Unlock()
		if dups != 0 {
			return fmt.Errorf("%s handled %d duplicates", names[i], dups)
		}
		if !(pos[user.ID] < pos[order.ID] && pos[order.ID] < pos[paid.ID]) {
			return fmt.Errorf("%s saw an effect before its cause", names[i])
		}
		st, err := nodes[i].Status(ctx) // the health check
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %-8s handled %d, each once, causes first; health: %d peers, %d buffered, %d deduplicated\n",
			names[i], h.distinct(), st.Peers, st.Buffered, st.Deduped)
	}
	// Delivery comes first (by gossip); the journal follows within its
	// batching delay (Params.JournalDelay, 50 ms by default).
	var chain []*signalmesh.Signal
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		chain, err = nodes[2].Causes(ctx, paid.ID)
		if err == nil && len(chain) == 3 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprint(w, "cause chain of the payment, read on worker-1:")
	for _, s := range chain {
		fmt.Fprintf(w, " %s", s.Type)
	}
	fmt.Fprintln(w)

	// A peer goes down: the others notice.
	worker := nodes[2].ID()
	if err := nodes[2].Close(); err != nil {
		return err
	}
	if err := await(ctx, func() bool { return mon.saw("web-1", worker) && mon.saw("web-2", worker) }); err != nil {
		return errors.New("the others did not notice worker-1 leaving")
	}
	fmt.Fprintf(w, "worker-1 (%s…) stopped: web-1 and web-2 saw it go down\n", worker.String()[:16])
	fmt.Fprintln(w, "ok: nothing lost, nothing twice, causes first")
	return nil
}

// monitor records which peer saw which other go down.
type monitor struct {
	mu   sync.Mutex
	seen map[string][]peer.ID
}

func (m *monitor) down(who string, p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen[who] = append(m.seen[who], p)
}

func (m *monitor) saw(who string, p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range m.seen[who] {
		if q == p {
			return true
		}
	}
	return false
}

func (h *handled) record(ctx context.Context, s *signalmesh.Signal) error {
	if d := h.slow[s.Type]; d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[s.ID]++
	h.order = append(h.order, s.ID)
	return nil
}

func (h *handled) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// waitDelivered waits until the publishing peer has handled the cause, as a
// service reacting to it would: then the effect it publishes carries the
// cause in its vector clock, and every peer delivers them in that order.
func waitDelivered(ctx context.Context, h *handled, cause string) error {
	if cause == "" {
		return nil
	}
	return await(ctx, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.seen[cause] > 0
	})
}

func await(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
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
