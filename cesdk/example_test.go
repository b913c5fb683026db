package cesdk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/cesdk"
	"github.com/signalmesh/signalmesh/node"
)

// A signal becomes an SDK event and back, unchanged.
func ExampleToEvent() {
	s, _ := signalmesh.New("order.created", "/shop/eu-1", map[string]int{"total": 42},
		signalmesh.WithID("o-1"), signalmesh.WithExtension("priority", 2))
	e, err := cesdk.ToEvent(s)
	if err != nil {
		panic(err)
	}
	fmt.Println(e.Type(), e.ID(), e.Extensions()["priority"], string(e.Data()))
	back, _ := cesdk.FromEvent(e)
	fmt.Println("unchanged:", back.Equal(s))
	// Output:
	// order.created o-1 2 {"total":42}
	// unchanged: true
}

// A service that speaks CloudEvents sends an event with the SDK's HTTP
// client into a mesh: here to a bridge ingress, the handler the daemon
// serves at /v1/ingest (its /v1/publish reads the same three modes).
func Example_sdkClient() {
	ctx := context.Background()
	n, err := node.New(ctx, node.Config{Mesh: "sdk-example", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	in, err := bridge.NewIngress(n, bridge.IngressConfig{Cluster: "sdk-example", Tokens: []string{"secret-token"}})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(in)
	defer srv.Close()
	got := make(chan *signalmesh.Signal, 1)
	if _, err := n.Subscribe("order.**", func(_ context.Context, s *signalmesh.Signal) error {
		got <- s
		return nil
	}); err != nil {
		panic(err)
	}

	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL),
		cehttp.WithHeader("Authorization", "Bearer secret-token"))
	if err != nil {
		panic(err)
	}
	e := cloudevents.NewEvent()
	e.SetID("o-7")
	e.SetSource("/sdk/service")
	e.SetType("order.created")
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]int{"total": 7})
	if res := c.Send(ctx, e); !cloudevents.IsACK(res) {
		panic(res)
	}
	s := <-got
	fmt.Println(s.Type, s.ID, s.Source, string(s.Data))
	// Output:
	// order.created o-7 /sdk/service {"total":7}
}
