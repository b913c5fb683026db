package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// Two peers in one process: one subscribes, the other publishes an order and
// a payment it caused; the subscriber sees both, cause first.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := node.Config{Mesh: "example", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet}
	shop, err := node.New(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer shop.Close()
	warehouse, err := node.New(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer warehouse.Close()

	got := make(chan string, 2)
	_, err = warehouse.Subscribe("**", func(_ context.Context, s *signalmesh.Signal) error {
		got <- s.Type
		return nil
	})
	if err != nil {
		panic(err)
	}
	if err := shop.Connect(ctx, warehouse.AddrInfo()); err != nil {
		panic(err)
	}

	order, _ := signalmesh.New("order.created", "/shop", map[string]int{"total": 42})
	paid, _ := signalmesh.New("payment.captured", "/shop", nil, signalmesh.WithCause(order))
	if err := shop.Publish(ctx, order, paid); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	fmt.Println(<-got)
	// Output:
	// order.created
	// payment.captured
}
