// Command commerce is multi-region commerce on signalmesh: three regions
// (eu, us, ap), each a small mesh of two peers, bridged to each other over
// HTTP. Orders are Eventual (journaled, never lost), payments Quorum(1)
// (acknowledged by a second peer of the region before the call returns),
// fraud alerts Weak (gossip only: fast, may be lost), and inventory is a
// latest-per-product view that every region resolves the same way. In
// each region a fulfilment consumer group (LocalFirst: the member on the
// peer where the order came in) and a payments group (Hash by order:
// each order's payments on one member) handle each signal once between
// the region's two peers. One region is cut off for a while and keeps
// taking orders; when the link heals, every region ends with every order,
// once.
//
//	go run ./examples/commerce [-short]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/node"
)

func main() {
	short := flag.Bool("short", false, "fewer orders (CI)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *short); err != nil {
		fmt.Fprintln(os.Stderr, "commerce:", err)
		os.Exit(1)
	}
}

// region is one cluster: two peers, an ingress, an egress to the others.
type region struct {
	name   string
	peers  [2]*node.Node
	srv    *httptest.Server
	eg     *bridge.Egress
	cut    atomic.Bool // its link to the other regions is down
	orders sync.Map    // order id -> times handled
	stock  *bridge.Latest

	paid      int // payments published here
	mu        sync.Mutex
	fulfilled map[string][]int // order id -> the peers whose group member fulfilled it
	captured  map[string][]int // payment id -> the peers whose member captured it
}

// groups makes the region's consumer groups, a member on each peer, and
// waits until both peers see both members of each.
func (r *region) groups(ctx context.Context) error {
	r.fulfilled, r.captured = map[string][]int{}, map[string][]int{}
	record := func(m map[string][]int, peer int) node.Handler {
		return func(_ context.Context, s *signalmesh.Signal) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			m[node.IdempotencyKey(s)] = append(m[node.IdempotencyKey(s)], peer)
			return nil
		}
	}
	for i, p := range r.peers {
		if _, err := p.Subscribe("order.**", record(r.fulfilled, i), node.WithGroup("fulfilment"), node.WithStrategy(node.LocalFirst)); err != nil {
			return err
		}
		if _, err := p.Subscribe("payment.**", record(r.captured, i), node.WithGroup("payments"), node.WithStrategy(node.Hash)); err != nil {
			return err
		}
	}
	return await(ctx, func() bool {
		for _, p := range r.peers {
			st, err := p.Status(ctx)
			if err != nil || len(st.Groups["fulfilment"]) != 2 || len(st.Groups["payments"]) != 2 {
				return false
			}
		}
		return true
	})
}

// groupWork says how the region's groups shared the work: every signal
// handled once, and by which peer.
func (r *region) groupWork() (fulfilled, captured [2]int, twice int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ps := range r.fulfilled {
		fulfilled[ps[0]]++
		twice += len(ps) - 1
	}
	for _, ps := range r.captured {
		captured[ps[0]]++
		twice += len(ps) - 1
	}
	return fulfilled, captured, twice
}

func (r *region) ordersHandled() (distinct, dups int) {
	r.orders.Range(func(_, v any) bool {
		distinct++
		dups += int(v.(*atomic.Int64).Load()) - 1
		return true
	})
	return
}

func run(ctx context.Context, w io.Writer, short bool) error {
	perRegion, whileCut := 100, 200
	if short {
		perRegion, whileCut = 20, 40
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Each peer keeps its journal on disk: a Quorum(1) payment is then on
	// the disk of a second peer when PublishWith returns.
	dir, err := os.MkdirTemp("", "commerce-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	regions := []*region{{name: "eu"}, {name: "us"}, {name: "ap"}}
	byName := map[string]*region{}
	for _, r := range regions {
		byName[r.name] = r
		mesh := fmt.Sprintf("%s-%d", r.name, time.Now().UnixNano())
		for i := range r.peers {
			n, err := node.New(ctx, node.Config{Mesh: mesh, Region: r.name, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet,
				DataDir: filepath.Join(dir, fmt.Sprintf("%s-%d", r.name, i))})
			if err != nil {
				return err
			}
			defer n.Close()
			r.peers[i] = n
		}
		if err := r.peers[0].Connect(ctx, r.peers[1].AddrInfo()); err != nil {
			return err
		}
		if err := r.groups(ctx); err != nil {
			return err
		}
		in, err := bridge.NewIngress(r.peers[0], bridge.IngressConfig{Cluster: r.name, Tokens: []string{"eu", "us", "ap"}, Logger: quiet,
			Routes: []bridge.IngressRoute{{Pattern: "fraud.**", Consistency: node.Weak}}})
		if err != nil {
			return err
		}
		// The region's front door; while the region is cut off, nothing gets
		// in or out (requests from a cut region fail too).
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			from := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
			if r.cut.Load() || (byName[from] != nil && byName[from].cut.Load()) {
				http.Error(w, "link down", http.StatusServiceUnavailable)
				return
			}
			in.ServeHTTP(w, req)
		}))
		defer r.srv.Close()
		// Every peer of the region sees orders and inventory.
		r.stock = bridge.NewLatest(bridge.LastWriterWins{})
		if _, err := r.peers[1].Subscribe("order.**", func(_ context.Context, s *signalmesh.Signal) error {
			v, _ := r.orders.LoadOrStore(s.ID, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			return nil
		}); err != nil {
			return err
		}
		if _, err := r.peers[1].Subscribe("inventory.**", r.stock.Handler()); err != nil {
			return err
		}
	}
	for _, r := range regions {
		var dests []bridge.Destination
		for _, o := range regions {
			if o != r {
				dests = append(dests, bridge.Destination{Name: o.name, URL: o.srv.URL, Cluster: o.name, Token: r.name, Mode: bridge.Batch,
					Patterns: []string{"order.**", "inventory.**", "fraud.**"},
					Retry:    bridge.Retry{Attempts: -1, Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
					Breaker:  bridge.Breaker{Failures: 3, OpenFor: 300 * time.Millisecond}})
			}
		}
		var store ds.Batching = dssync.MutexWrap(ds.NewMapDatastore()) // a real deployment uses the node's disk
		eg, err := bridge.NewEgress(r.peers[0], bridge.EgressConfig{Cluster: r.name, Store: store, Destinations: dests, Logger: quiet})
		if err != nil {
			return err
		}
		defer eg.Close()
		r.eg = eg
	}
	fmt.Fprintln(w, "3 regions (eu, us, ap), 2 peers each, bridged over HTTP both ways")

	total := 0
	shop := func(r *region, n int) error {
		for i := range n {
			order, _ := signalmesh.New("order."+r.name+".created", "/shop/"+r.name, map[string]any{"sku": "book", "qty": 1},
				signalmesh.WithSubject(fmt.Sprintf("%s-%d", r.name, total+i)))
			if err := r.peers[0].Publish(ctx, order); err != nil { // Eventual: journaled, never lost
				return err
			}
			pay, _ := signalmesh.New("payment."+r.name+".captured", "/pay/"+r.name, map[string]any{"order": order.ID},
				signalmesh.WithCause(order), signalmesh.WithSubject(order.Subject)) // Hash: an order's payments on one member
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := r.peers[0].PublishWith(qctx, node.Quorum(1), pay) // a second peer has it on disk
			cancel()
			if err != nil {
				return fmt.Errorf("payment: %w", err)
			}
			r.paid++
			if i%10 == 0 {
				alert, _ := signalmesh.New("fraud."+r.name+".score", "/fraud", map[string]float64{"score": 0.1}, signalmesh.WithCause(order))
				_ = r.peers[0].PublishWith(ctx, node.Weak, alert) // best effort
			}
		}
		total += n
		return nil
	}
	setStock := func(r *region, qty int) error {
		s, _ := signalmesh.New("inventory.stock.set", "/stock/"+r.name, map[string]int{"qty": qty}, signalmesh.WithSubject("book"))
		return r.peers[0].Publish(ctx, s)
	}
	for _, r := range regions {
		if err := shop(r, perRegion); err != nil {
			return err
		}
	}
	if err := converge(ctx, regions, total); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d orders, each with a Quorum(1) payment: every region holds all of them\n", total)

	ap := byName["ap"]
	ap.cut.Store(true)
	if err := shop(ap, whileCut); err != nil {
		return err
	}
	if err := shop(byName["eu"], whileCut/2); err != nil {
		return err
	}
	if err := setStock(byName["us"], 7); err != nil {
		return err
	}
	if err := setStock(ap, 3); err != nil { // later, so the latest everywhere once healed
		return err
	}
	before := total - whileCut - whileCut/2
	if err := await(ctx, func() bool { // each side keeps serving its own customers meanwhile
		a, _ := ap.ordersHandled()
		e, _ := byName["eu"].ordersHandled()
		return a == before+whileCut && e == before+whileCut/2
	}); err != nil {
		return fmt.Errorf("while cut: %w", err)
	}
	apHas, _ := ap.ordersHandled()
	euHas, _ := byName["eu"].ordersHandled()
	fmt.Fprintf(w, "ap cut off: it took %d orders, eu %d more; ap holds %d orders, eu %d\n", whileCut, whileCut/2, apHas, euHas)

	ap.cut.Store(false)
	healed := time.Now()
	if err := converge(ctx, regions, total); err != nil {
		return err
	}
	fmt.Fprintf(w, "link healed: every region holds all %d orders %v later\n", total, time.Since(healed).Round(time.Millisecond))
	if err := await(ctx, func() bool {
		for _, r := range regions {
			s, ok := r.stock.Get("book")
			if !ok || !strings.Contains(string(s.Data), `"qty":3`) {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("inventory views disagree: %w", err)
	}
	fmt.Fprintln(w, "inventory: every region resolves book to qty 3 (last writer wins)")
	for _, r := range regions {
		n, dups := r.ordersHandled()
		if n != total || dups != 0 {
			return fmt.Errorf("%s handled %d orders with %d duplicates, want %d once", r.name, n, dups, total)
		}
		for _, o := range regions {
			if o != r {
				if st := r.eg.Stats()[o.name]; st.DeadLettered != 0 {
					return fmt.Errorf("%s->%s dead-lettered %d", r.name, o.name, st.DeadLettered)
				}
			}
		}
	}
	for _, r := range regions {
		var f, c [2]int
		var twice int
		if err := await(ctx, func() bool {
			f, c, twice = r.groupWork()
			return f[0]+f[1] == total && c[0]+c[1] == r.paid // payments stay in their region
		}); err != nil {
			return fmt.Errorf("%s: fulfilled %v, captured %v: %w", r.name, f, c, err)
		}
		if twice != 0 {
			return fmt.Errorf("%s: %d signals handled twice by its groups", r.name, twice)
		}
		if r.name == "eu" {
			fmt.Fprintf(w, "eu's groups: fulfilment (LocalFirst) on the peer where orders come in %v, payments (Hash by order) split %v, each once\n", f, c)
		}
	}
	fmt.Fprintln(w, "ok: no order lost, none twice, in any region")
	return nil
}

// converge waits until every region handled total orders.
func converge(ctx context.Context, regions []*region, total int) error {
	return await(ctx, func() bool {
		for _, r := range regions {
			if n, _ := r.ordersHandled(); n != total {
				return false
			}
		}
		return true
	})
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
