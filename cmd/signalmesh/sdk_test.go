package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/cesdk"
)

// The CloudEvents SDK's HTTP client publishes into the daemon in binary,
// structured and batch mode, and the daemon journals every event with its
// attributes and extensions.
func TestDaemonTakesSDKClient(t *testing.T) {
	_, url, _ := daemon(t, "-mesh", "sdk-test", "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0")
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(url + "/v1/publish"))
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]*signalmesh.Signal{}
	mk := func(subject string) cloudevents.Event {
		s, err := signalmesh.New("order.created", "/sdk/test", map[string]string{"via": subject},
			signalmesh.WithSubject(subject), signalmesh.WithExtension("tenant", "acme"))
		if err != nil {
			t.Fatal(err)
		}
		e, err := cesdk.ToEvent(s)
		if err != nil {
			t.Fatal(err)
		}
		sent[s.ID] = s
		return e
	}
	ctx := context.Background()
	for mode, ctx := range map[string]context.Context{"binary": binding.WithForceBinary(ctx), "structured": binding.WithForceStructured(ctx)} {
		if res := c.Send(ctx, mk(mode)); !cloudevents.IsACK(res) {
			t.Fatalf("%s: %v", mode, res)
		}
	}
	req, err := cehttp.NewHTTPRequestFromEvents(ctx, url+"/v1/publish", []cloudevents.Event{mk("batch"), mk("batch")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %s", resp.Status)
	}
	var got []*signalmesh.Signal
	awaitCond(t, "the 4 events journaled", func() bool {
		got = nil
		getJSON(t, url+"/v1/replay?pattern=order.created", &got)
		return len(got) == len(sent)
	})
	// The daemon's /metrics has the histograms and libp2p's metrics.
	resp, err = http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`signalmesh_publish_seconds_count{consistency="eventual"} 3`, "signalmesh_delivery_lag_seconds", "signalmesh_heal_seconds_count", "\nlibp2p_"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, s := range got {
		want := sent[s.ID]
		if want == nil {
			t.Fatalf("journaled %s, never sent", s.ID)
		}
		if s.Subject != want.Subject || s.Source != want.Source || string(s.Data) != string(want.Data) ||
			s.Extensions["tenant"] != "acme" || !s.Time.Equal(want.Time) {
			t.Errorf("journaled %+v\nsent %+v", s, want)
		}
	}
}
