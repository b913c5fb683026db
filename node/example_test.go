package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
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

// A consumer that must see every signal: with OverflowBlock, a burst
// larger than its queue makes the node wait for room instead of dropping.
// The handler publishes on its node with the ctx it was given, which lets
// the node tell its calls from others' while it waits for this handler.
func ExampleWithOverflow() {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(ctx, node.Config{Mesh: "example-overflow", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer n.Close()

	const readings = 1000
	handled, done := 0, make(chan struct{})
	sub, err := n.Subscribe("reading.**", func(ctx context.Context, s *signalmesh.Signal) error {
		handled++ // one call at a time
		if handled%100 == 0 {
			total, _ := signalmesh.New("total.counted", "/meter", handled, signalmesh.WithCause(s))
			if err := n.Publish(ctx, total); err != nil { // ctx: the handler's
				return err
			}
		}
		if handled == readings {
			close(done)
		}
		return nil
	}, node.WithMaxInFlight(16), node.WithOverflow(node.OverflowBlock))
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	batch := make([]*signalmesh.Signal, readings)
	for i := range batch {
		batch[i], _ = signalmesh.New("reading.temperature", "/meter", i)
	}
	if err := n.Publish(ctx, batch...); err != nil {
		panic(err)
	}
	<-done
	fmt.Println("handled", handled, "dropped", sub.Dropped())
	// Output: handled 1000 dropped 0
}

// A subscription that asks for history is told where retention cut it:
// sensor readings are kept for an hour, so a subscription from the
// beginning first gets a truncation notice for the 3 older readings it
// passed over, then the 2 recent ones.
func ExampleTruncation() {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(ctx, node.Config{Mesh: "example-retention", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet,
		Retention: journal.Retention{{Pattern: "sensor.**", MaxAge: time.Hour}}})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	// A live subscription tells when the node has delivered the readings:
	// Publish returns once they are durable, a moment before.
	delivered := make(chan struct{}, 5)
	if _, err := n.Subscribe("sensor.**", func(context.Context, *signalmesh.Signal) error {
		delivered <- struct{}{}
		return nil
	}); err != nil {
		panic(err)
	}
	for i := range 5 {
		at := time.Now().Add(-2 * time.Hour)
		if i >= 3 {
			at = time.Now()
		}
		s, _ := signalmesh.New("sensor.temp", "/probe", map[string]int{"reading": i}, signalmesh.WithTime(at))
		if err := n.Publish(ctx, s); err != nil {
			panic(err)
		}
	}
	for range 5 {
		<-delivered
	}
	got := make(chan string, 3)
	_, err = n.Subscribe("sensor.**", func(_ context.Context, s *signalmesh.Signal) error {
		if left, ok := node.Truncation(s); ok {
			got <- fmt.Sprintf("%d signals past retention", left)
			return nil
		}
		got <- string(s.Data)
		return nil
	}, node.WithStart(node.StartBeginning))
	if err != nil {
		panic(err)
	}
	for range 3 {
		fmt.Println(<-got)
	}
	// Output:
	// 3 signals past retention
	// {"reading":3}
	// {"reading":4}
}
