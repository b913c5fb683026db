package bridge_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/node"
)

// Two clusters, each a one-node mesh here, bridged both ways over HTTP:
// each cluster's orders reach the other once, and nothing comes back.
func Example() {
	ctx := context.Background()
	start := func(name string) (*node.Node, *httptest.Server) {
		n, err := node.New(ctx, node.Config{Mesh: name, Logger: quiet()})
		if err != nil {
			panic(err)
		}
		in, err := bridge.NewIngress(n, bridge.IngressConfig{Cluster: name, Tokens: []string{"t-" + name}})
		if err != nil {
			panic(err)
		}
		return n, httptest.NewServer(in)
	}
	eu, euURL := start("eu")
	us, usURL := start("us")
	link := func(from *node.Node, fromName, toName, url string) *bridge.Egress {
		eg, err := bridge.NewEgress(from, bridge.EgressConfig{Cluster: fromName, Store: memStore(),
			Destinations: []bridge.Destination{{Name: toName, URL: url, Cluster: toName, Token: "t-" + toName, Patterns: []string{"order.**"}}}})
		if err != nil {
			panic(err)
		}
		return eg
	}
	toUS, toEU := link(eu, "eu", "us", usURL.URL), link(us, "us", "eu", euURL.URL)

	got := make(chan string, 10)
	_, _ = us.Subscribe("order.**", func(_ context.Context, s *signalmesh.Signal) error {
		got <- fmt.Sprintf("us got %s from %v", s.Type, s.Extensions[bridge.ExtCluster])
		return nil
	})
	s, _ := signalmesh.New("order.eu.created", "/shop/eu", map[string]string{"order": "o-1"})
	_ = eu.Publish(ctx, s)
	fmt.Println(<-got)

	for toEU.Stats()["eu"].Skipped == 0 { // us's egress sees the order too, and does not send it back
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("sent back to eu:", toEU.Stats()["eu"].Sent, "skipped:", toEU.Stats()["eu"].Skipped)

	for _, c := range []func() error{toUS.Close, toEU.Close, eu.Close, us.Close} {
		_ = c()
	}
	euURL.Close()
	usURL.Close()
	// Output:
	// us got order.eu.created from eu
	// sent back to eu: 0 skipped: 1
}
