// Command cloudevents sends CloudEvents into a running signalmesh daemon with
// the official CloudEvents Go SDK's HTTP client, in each of the three modes
// of the CloudEvents HTTP binding, and checks that the daemon journaled them.
//
//	signalmesh node -mesh demo -http 127.0.0.1:8080 &
//	go run ./examples/cloudevents -node http://127.0.0.1:8080
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/cesdk"
)

func main() {
	nodeURL := flag.String("node", "http://127.0.0.1:8080", "the daemon's HTTP API")
	token := flag.String("token", "", "bearer token, when the daemon has -api-token")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, err := send(ctx, *nodeURL, *token)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloudevents:", err)
		os.Exit(1)
	}
	fmt.Println("sent and journaled:", ids)
}

// send posts one event in binary mode, one in structured mode and two in a
// batch to the daemon's /v1/publish, and returns their ids once the
// daemon's journal replays all four.
func send(ctx context.Context, nodeURL, token string) ([]string, error) {
	var opts []cehttp.Option
	if token != "" {
		opts = append(opts, cehttp.WithHeader("Authorization", "Bearer "+token))
	}
	c, err := cloudevents.NewClientHTTP(append(opts, cloudevents.WithTarget(nodeURL+"/v1/publish"))...)
	if err != nil {
		return nil, err
	}
	var ids []string
	mk := func(n int) cloudevents.Event {
		// A signal made by signalmesh, sent as an SDK event (a service could
		// equally build the event with the SDK alone).
		s, _ := signalmesh.New("order.created", "/sdk/example", map[string]int{"n": n})
		e, err := cesdk.ToEvent(s)
		if err != nil {
			panic(err) // a signal New made is always convertible
		}
		ids = append(ids, e.ID())
		return e
	}
	for _, ctx := range []context.Context{binding.WithForceBinary(ctx), binding.WithForceStructured(ctx)} {
		if res := c.Send(ctx, mk(len(ids))); !cloudevents.IsACK(res) {
			return nil, fmt.Errorf("send: %w", res)
		}
	}
	req, err := cehttp.NewHTTPRequestFromEvents(ctx, nodeURL+"/v1/publish", []cloudevents.Event{mk(2), mk(3)})
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("batch: %s", resp.Status)
	}
	return ids, awaitJournaled(ctx, nodeURL, token, ids)
}

func awaitJournaled(ctx context.Context, nodeURL, token string, ids []string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, nodeURL+"/v1/replay?pattern=order.created", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		var got []struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		seen := map[string]bool{}
		for _, g := range got {
			seen[g.ID] = true
		}
		missing := 0
		for _, id := range ids {
			if !seen[id] {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%d of %d events not in the journal", missing, len(ids)), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
