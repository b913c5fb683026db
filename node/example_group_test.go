package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// A consumer group on two peers: each order is handled once in all, every
// order of one customer (the subject) by the same member, in order.
func ExampleWithGroup() {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := node.Config{Mesh: "example-group", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet}
	var mu sync.Mutex
	handled := map[string]int{}           // idempotency key -> handlings
	memberOf := map[string]map[int]bool{} // subject -> members that handled it
	var peers []*node.Node
	for i := range 2 {
		n, err := node.New(ctx, cfg)
		if err != nil {
			panic(err)
		}
		defer n.Close()
		_, err = n.Subscribe("order.**", func(_ context.Context, s *signalmesh.Signal) error {
			mu.Lock()
			defer mu.Unlock()
			handled[node.IdempotencyKey(s)]++ // a real handler records it with its effect
			if memberOf[s.Subject] == nil {
				memberOf[s.Subject] = map[int]bool{}
			}
			memberOf[s.Subject][i] = true
			return nil
		}, node.WithGroup("fulfilment"), node.WithStrategy(node.Hash))
		if err != nil {
			panic(err)
		}
		peers = append(peers, n)
	}
	if err := peers[0].Connect(ctx, peers[1].AddrInfo()); err != nil {
		panic(err)
	}
	for { // both members live on both peers
		a, _ := peers[0].Status(ctx)
		b, _ := peers[1].Status(ctx)
		if len(a.Groups["fulfilment"]) == 2 && len(b.Groups["fulfilment"]) == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	var orders []*signalmesh.Signal
	for i := range 100 {
		s, _ := signalmesh.New("order.created", "/shop", map[string]int{"n": i},
			signalmesh.WithSubject(fmt.Sprint("customer-", i%10)))
		orders = append(orders, s)
	}
	if err := peers[1].Publish(ctx, orders...); err != nil {
		panic(err)
	}
	for {
		mu.Lock()
		done := len(handled) == 100
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	once, oneMember := true, true
	for _, c := range handled {
		once = once && c == 1
	}
	for _, ms := range memberOf {
		oneMember = oneMember && len(ms) == 1
	}
	fmt.Println("orders handled:", len(handled), "each once:", once)
	fmt.Println("each customer's orders on one member:", oneMember)
	fmt.Println(peers[0].Routes("order.created")[0].Group, "routes order.created")
	// Output:
	// orders handled: 100 each once: true
	// each customer's orders on one member: true
	// fulfilment routes order.created
}
