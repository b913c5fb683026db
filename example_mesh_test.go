package signalmesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/router"
)

// A peer on disk with a persistent subscription, a signal caused by
// another, a router, and the two encodings: README's "A taste of the API"
// is this example.
func Example_mesh() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "shop-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	n, err := node.New(ctx, node.Config{Mesh: "shop", DataDir: dir,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet}) // add Bootstrap: peers to join others
	if err != nil {
		panic(err)
	}
	defer n.Close()
	fulfilled := make(chan string, 1)
	sub, err := n.Subscribe("order.**", func(ctx context.Context, s *signalmesh.Signal) error {
		fulfilled <- s.Subject
		return nil
	}, node.WithName("fulfilment")) // persistent: resumes after a restart
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	cart, _ := signalmesh.New("cart.checked_out", "/shop/eu-1", nil)
	s, err := signalmesh.New("order.eu.created", "/shop/eu-1", map[string]int{"total": 42},
		signalmesh.WithSubject("o-42"), signalmesh.WithCause(cart))
	if err != nil {
		panic(err)
	}

	r := router.New[string]()
	_ = r.Add("order.**", "audit")
	_ = r.Add("order.*.created", "fulfil", router.WithPriority(10))
	fmt.Println(r.Route(s)) // most specific first

	if err := n.Publish(ctx, cart, s); err != nil { // durable locally, then gossiped and journaled
		panic(err)
	}
	fmt.Println("fulfilled", <-fulfilled)

	b, _ := json.Marshal(s)   // a CloudEvent any CloudEvents SDK reads
	w, _ := s.MarshalBinary() // compact wire form for gossip
	back, _ := signalmesh.DecodeBinary(w, signalmesh.Limits{})
	fmt.Println(json.Valid(b), back.Equal(s))
	// Output:
	// [fulfil audit]
	// fulfilled o-42
	// true true
}
