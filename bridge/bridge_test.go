package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(nodetest.IgnoredGoroutines(),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))...)
}

func sdkEvent(i int) cloudevents.Event {
	e := cloudevents.NewEvent()
	e.SetID(fmt.Sprintf("sdk-%d-%d", i, time.Now().UnixNano()))
	e.SetSource("/sdk/test")
	e.SetType("sdk.order.created")
	e.SetSubject(fmt.Sprintf("o-%d", i))
	e.SetTime(time.Now().UTC().Truncate(time.Microsecond))
	e.SetExtension("tenant", "acme")
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]any{"n": i, "item": "book"})
	return e
}

// The official SDK's client publishes into the ingress in each mode; the
// node delivers what was sent, attribute for attribute.
func TestSDKClientPublishesIntoIngress(t *testing.T) {
	c := newCluster(t, "eu")
	client, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(c.srv.URL),
		cehttp.WithHeader("Authorization", "Bearer tok-eu"))
	if err != nil {
		t.Fatal(err)
	}
	var sent []cloudevents.Event
	for i, mode := range []string{"binary", "structured"} {
		e := sdkEvent(i)
		ctx := context.Background()
		if mode == "structured" {
			ctx = binding.WithForceStructured(ctx)
		} else {
			ctx = binding.WithForceBinary(ctx)
		}
		if res := client.Send(ctx, e); !cloudevents.IsACK(res) {
			t.Fatalf("%s: %v", mode, res)
		}
		sent = append(sent, e)
	}
	batch := []cloudevents.Event{sdkEvent(10), sdkEvent(11), sdkEvent(12)}
	req, err := cehttp.NewHTTPRequestFromEvents(context.Background(), c.srv.URL, batch)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-eu")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(string(body), `"accepted":3`) {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	sent = append(sent, batch...)
	await(t, "the SDK's events", func() bool { n, _ := c.got.count("sdk."); return n == len(sent) })
	for _, e := range sent {
		s := c.got.get(e.ID())
		if s == nil || s.Type != e.Type() || s.Source != e.Source() || s.Subject != e.Subject() || !s.Time.Equal(e.Time()) ||
			s.Extensions["tenant"] != "acme" || s.Extensions[bridge.ExtCluster] != "eu" {
			t.Fatalf("event %s arrived as %+v", e.ID(), s)
		}
		var got, want map[string]any
		_ = json.Unmarshal(s.Data, &got)
		_ = json.Unmarshal(e.Data(), &want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("data %s, want %s", s.Data, e.Data())
		}
	}
	if _, dups := c.got.count("sdk."); dups != 0 {
		t.Errorf("%d duplicate deliveries", dups)
	}
}

// The egress sends in each mode to the SDK's receiver, which gets every
// signal once with its attributes.
func TestEgressToSDKReceiver(t *testing.T) {
	for _, mode := range []bridge.Mode{bridge.Structured, bridge.Binary, bridge.Batch} {
		t.Run(string(mode), func(t *testing.T) {
			n := newNode(t, fmt.Sprintf("egress-%s-%d", mode, time.Now().UnixNano()), "")
			var mu sync.Mutex
			got := map[string]cloudevents.Event{}
			record := func(e cloudevents.Event) {
				mu.Lock()
				got[e.ID()] = e
				mu.Unlock()
			}
			var h http.Handler
			if mode == bridge.Batch {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					evs, err := cehttp.NewEventsFromHTTPRequest(r)
					if err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					for _, e := range evs {
						record(e)
					}
				})
			} else {
				p, err := cloudevents.NewHTTP()
				if err != nil {
					t.Fatal(err)
				}
				h, err = cloudevents.NewHTTPReceiveHandler(context.Background(), p, func(e cloudevents.Event) { record(e) })
				if err != nil {
					t.Fatal(err)
				}
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: memStore(), Logger: testLogger(t),
				Destinations: []bridge.Destination{{Name: "sdk", URL: srv.URL, Mode: mode, Patterns: []string{"order.**"}}}})
			if err != nil {
				t.Fatal(err)
			}
			var sigs []*signalmesh.Signal
			for i := range 20 {
				s, _ := signalmesh.New("order.eu.created", "/shop", map[string]int{"n": i}, signalmesh.WithSubject(fmt.Sprint(i)),
					signalmesh.WithExtension("tenant", "acme"))
				sigs = append(sigs, s)
			}
			other, _ := signalmesh.New("audit.login", "/shop", nil)
			if err := n.Publish(context.Background(), append(sigs, other)...); err != nil {
				t.Fatal(err)
			}
			await(t, "deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(sigs) })
			if err := eg.Close(); err != nil {
				t.Fatal(err)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			for _, s := range sigs {
				e, ok := got[s.ID]
				if !ok || e.Type() != s.Type || e.Subject() != s.Subject || e.Extensions()["tenant"] != "acme" || e.Extensions()["meshcluster"] != "eu" {
					t.Fatalf("signal %s received as %v", s.ID, e)
				}
				if string(e.Data()) != string(s.Data) {
					t.Errorf("data %s, want %s", e.Data(), s.Data)
				}
			}
			if _, ok := got[other.ID]; ok {
				t.Error("a signal no pattern matches was sent")
			}
		})
	}
}

// Webhooks are signed over "<unix seconds>.<body>"; a receiver verifies
// them and refuses stale timestamps and tampered bodies.
func TestWebhookSignature(t *testing.T) {
	secret := []byte("s3cret")
	n := newNode(t, fmt.Sprintf("hook-%d", time.Now().UnixNano()), "")
	var ok, bad atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := bridge.Verify(secret, r.Header.Get(bridge.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			bad.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ok.Add(1)
	}))
	defer srv.Close()
	eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: memStore(), Logger: testLogger(t),
		Destinations: []bridge.Destination{{Name: "hook", URL: srv.URL, Mode: bridge.Webhook, Secret: secret, Patterns: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := signalmesh.New("order.paid", "/shop", nil)
	if err := n.Publish(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	await(t, "the webhook", func() bool { return ok.Load() == 1 })
	if err := eg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d webhooks failed verification", bad.Load())
	}

	body := []byte(`{"a":1}`)
	now := time.Now()
	good := bridge.Sign(secret, now, body)
	for _, c := range []struct {
		name   string
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"good", good, body, now, nil},
		{"tampered body", good, []byte(`{"a":2}`), now, bridge.ErrBadSignature},
		{"other secret", bridge.Sign([]byte("x"), now, body), body, now, bridge.ErrBadSignature},
		{"stale", bridge.Sign(secret, now.Add(-10*time.Minute), body), body, now, bridge.ErrStale},
		{"from the future", bridge.Sign(secret, now.Add(10*time.Minute), body), body, now, bridge.ErrStale},
		{"missing", "", body, now, bridge.ErrNoSignature},
		{"garbage", "t=abc,v1=zz", body, now, bridge.ErrBadSignature},
	} {
		err := bridge.Verify(secret, c.header, c.body, c.at, 0)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// Bad credentials, bad signatures, stale timestamps and malformed bodies
// get the right 4xx with a reason, and publish nothing.
func TestIngressRefusesAndPublishesNothing(t *testing.T) {
	n := newNode(t, fmt.Sprintf("refuse-%d", time.Now().UnixNano()), "")
	defer n.Close()
	secret := []byte("k")
	in, err := bridge.NewIngress(n, bridge.IngressConfig{Cluster: "eu", Tokens: []string{"good"}, Secret: secret, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(in)
	defer srv.Close()
	valid, _ := signalmesh.New("order.created", "/x", map[string]int{"n": 1})
	vb, _ := valid.MarshalJSON()
	const ct = "application/cloudevents+json"
	for _, c := range []struct {
		name   string
		method string
		ctype  string
		body   []byte
		auth   map[string]string
		want   int
	}{
		{"no credentials", "POST", ct, vb, nil, 401},
		{"wrong token", "POST", ct, vb, map[string]string{"Authorization": "Bearer nope"}, 401},
		{"not bearer", "POST", ct, vb, map[string]string{"Authorization": "Basic Z29vZA=="}, 401},
		{"bad signature", "POST", ct, vb, map[string]string{bridge.SignatureHeader: bridge.Sign([]byte("other"), time.Now(), vb)}, 401},
		{"signature of another body", "POST", ct, vb, map[string]string{bridge.SignatureHeader: bridge.Sign(secret, time.Now(), []byte("{}"))}, 401},
		{"stale signature", "POST", ct, vb, map[string]string{bridge.SignatureHeader: bridge.Sign(secret, time.Now().Add(-time.Hour), vb)}, 401},
		{"malformed JSON", "POST", ct, []byte(`{"id":`), map[string]string{"Authorization": "Bearer good"}, 400},
		{"no type", "POST", ct, []byte(`{"specversion":"1.0","id":"1","source":"/x"}`), map[string]string{"Authorization": "Bearer good"}, 400},
		{"batch not an array", "POST", "application/cloudevents-batch+json", vb, map[string]string{"Authorization": "Bearer good"}, 400},
		{"batch with a bad event", "POST", "application/cloudevents-batch+json", append(append([]byte("["), vb...), []byte(`,{"id":"x"}]`)...), map[string]string{"Authorization": "Bearer good"}, 400},
		{"not a CloudEvent", "POST", "text/plain", []byte("hello"), map[string]string{"Authorization": "Bearer good"}, 415},
		{"GET", "GET", ct, nil, map[string]string{"Authorization": "Bearer good"}, 405},
		{"too large", "POST", ct, bytes.Repeat([]byte("x"), 9<<20), map[string]string{"Authorization": "Bearer good"}, 413},
	} {
		req, _ := http.NewRequest(c.method, srv.URL, bytes.NewReader(c.body))
		req.Header.Set("Content-Type", c.ctype)
		for k, v := range c.auth {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || !strings.Contains(string(msg), `"error"`) {
			t.Errorf("%s: %d %s, want %d with an error", c.name, resp.StatusCode, msg, c.want)
		}
	}
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 0 {
		t.Fatalf("refused requests published %d signals", st.Published)
	}
	if got := in.Stats(); got.Accepted != 0 || got.Refused[401] != 6 {
		t.Errorf("stats %+v", got)
	}
	// The same event, signed properly, is accepted: the cases above failed
	// for the reason they name.
	req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(vb))
	req.Header.Set("Content-Type", ct)
	req.Header.Set(bridge.SignatureHeader, bridge.Sign(secret, time.Now(), vb))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("signed request: %d", resp.StatusCode)
	}
}

// A retried delivery (the same event posted again) publishes nothing twice.
func TestIngressDedupsRetries(t *testing.T) {
	c := newCluster(t, "eu")
	s, _ := signalmesh.New("order.created", "/x", nil)
	b, _ := s.MarshalJSON()
	for range 3 {
		req, _ := http.NewRequest("POST", c.srv.URL, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.Header.Set("Authorization", "Bearer tok-eu")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	await(t, "the delivery", func() bool { n, _ := c.got.count("order."); return n == 1 })
	await(t, "the journal entry", func() bool { k, _, _ := c.n.JournalDigest(context.Background()); return k >= 1 })
	if count, _, err := c.n.JournalDigest(context.Background()); err != nil || count != 1 {
		t.Fatalf("journal holds %d (%v), want 1", count, err)
	}
	if _, dups := c.got.count("order."); dups != 0 {
		t.Fatalf("%d duplicate deliveries", dups)
	}
}

// Two clusters bridged both ways exchange their signals once each, with no
// loop and no duplicate.
func TestTwoClustersBothWays(t *testing.T) {
	eu, us := newCluster(t, "eu"), newCluster(t, "us")
	link := func(from, to *cluster) *bridge.Egress {
		eg, err := bridge.NewEgress(from.n, bridge.EgressConfig{Cluster: from.name, Store: memStore(), Logger: testLogger(t),
			Destinations: []bridge.Destination{{Name: to.name, URL: to.srv.URL, Cluster: to.name, Token: "tok-" + to.name,
				Patterns: []string{"order.**"}, Mode: bridge.Batch}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eg.Close() })
		return eg
	}
	egEU, egUS := link(eu, us), link(us, eu)
	const each = 50
	for _, c := range []*cluster{eu, us} {
		var sigs []*signalmesh.Signal
		for i := range each {
			s, _ := signalmesh.New("order."+c.name+".created", "/"+c.name, nil, signalmesh.WithSubject(fmt.Sprint(i)))
			sigs = append(sigs, s)
		}
		if err := c.n.Publish(context.Background(), sigs...); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*cluster{eu, us} {
		await(t, c.name+" holding both clusters' orders", func() bool { n, _ := c.got.count("order."); return n == 2*each })
	}
	// Let anything that would loop have a chance to: each egress must have
	// skipped the signals it received from the other cluster.
	await(t, "both egresses to skip the other cluster's signals", func() bool {
		return egEU.Stats()["us"].Skipped == each && egUS.Stats()["eu"].Skipped == each
	})
	for _, c := range []*cluster{eu, us} {
		if n, dups := c.got.count("order."); n != 2*each || dups != 0 {
			t.Errorf("%s: %d signals, %d duplicates", c.name, n, dups)
		}
		await(t, c.name+"'s journal", func() bool { k, _, _ := c.n.JournalDigest(context.Background()); return k >= 2*each })
		if count, _, _ := c.n.JournalDigest(context.Background()); count != 2*each {
			t.Errorf("%s journal holds %d, want %d", c.name, count, 2*each)
		}
		if st := c.in.Stats(); st.Loops != 0 || st.Accepted != each {
			t.Errorf("%s ingress: %+v", c.name, st)
		}
	}
	for name, st := range map[string]bridge.DestStats{"eu->us": egEU.Stats()["us"], "us->eu": egUS.Stats()["eu"]} {
		if st.Sent != each || st.DeadLettered != 0 || st.Queued != 0 {
			t.Errorf("%s: %+v", name, st)
		}
	}
}

// A destination that is down receives everything once it is back, though
// the node and its egress restarted in between.
func TestDestinationDownAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	mesh := fmt.Sprintf("restart-%d", time.Now().UnixNano())
	var up atomic.Bool
	var mu sync.Mutex
	got := map[string]int{}
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			refused.Add(1)
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		s, err := signalmesh.DecodeJSON(body, signalmesh.Limits{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[s.ID]++
		mu.Unlock()
	}))
	defer srv.Close()
	dst := bridge.Destination{Name: "erp", URL: srv.URL, Patterns: []string{"order.**"},
		Retry:   bridge.Retry{Attempts: -1, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
		Breaker: bridge.Breaker{Failures: 3, OpenFor: 100 * time.Millisecond}}
	start := func() (*node.Node, *bridge.Egress, func()) {
		n := newNode(t, mesh, dir+"/node")
		st, err := pebbleds.NewDatastore(dir + "/bridge")
		if err != nil {
			t.Fatal(err)
		}
		eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: st, Logger: testLogger(t), Destinations: []bridge.Destination{dst}})
		if err != nil {
			t.Fatal(err)
		}
		return n, eg, func() {
			if err := eg.Close(); err != nil {
				t.Error(err)
			}
			if err := n.Close(); err != nil {
				t.Error(err)
			}
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	var ids []string
	publish := func(n *node.Node, k int) {
		var sigs []*signalmesh.Signal
		for i := range k {
			s, _ := signalmesh.New("order.created", "/shop", map[string]int{"n": i})
			sigs = append(sigs, s)
			ids = append(ids, s.ID)
		}
		if err := n.Publish(context.Background(), sigs...); err != nil {
			t.Fatal(err)
		}
	}
	n, eg, stop := start()
	publish(n, 20)
	await(t, "the breaker to open", func() bool { return eg.Stats()["erp"].Breaker != "closed" && refused.Load() >= 3 })
	stop()
	n, eg, stop = start()
	defer stop()
	// What the egress queued before the stop is in its outbox at once; a
	// signal the stop caught before the egress queued it comes again from
	// the node's named subscription (its cursor did not pass it).
	await(t, "the outbox after the restart holds the 20", func() bool { return eg.Stats()["erp"].Queued == 20 })
	publish(n, 20)
	// The restarted egress must retry its outbox against the destination
	// that is still down (a failure it counts) before the destination
	// comes back; otherwise the check below has nothing to see.
	await(t, "a refused retry after the restart", func() bool { return eg.Stats()["erp"].Failures > 0 })
	up.Store(true)
	await(t, "every signal delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(ids) })
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("signal %s delivered %d times", id, got[id])
		}
	}
	if st := eg.Stats()["erp"]; st.DeadLettered != 0 || st.Failures == 0 {
		t.Errorf("stats %+v", st)
	}
}

// A 4xx answer other than 408/429 is not retried: the signal is dead-
// lettered at once, with the status; a 429 is retried.
func TestPermanentFailureDeadLetters(t *testing.T) {
	n := newNode(t, fmt.Sprintf("dead-%d", time.Now().UnixNano()), "")
	defer n.Close()
	var calls400, calls429 atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/429") {
			if calls429.Add(1) < 3 {
				http.Error(w, "slow down", http.StatusTooManyRequests)
			}
			return
		}
		calls400.Add(1)
		http.Error(w, "no such order", http.StatusBadRequest)
	}))
	defer srv.Close()
	dead := newRecorder()
	if _, err := n.Subscribe(bridge.DeadLetterType, dead.handler); err != nil {
		t.Fatal(err)
	}
	fast := bridge.Retry{Backoff: 10 * time.Millisecond}
	eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: memStore(), Logger: testLogger(t), Destinations: []bridge.Destination{
		{Name: "strict", URL: srv.URL + "/400", Patterns: []string{"order.**"}, Retry: fast},
		{Name: "busy", URL: srv.URL + "/429", Patterns: []string{"order.**"}, Retry: fast},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer eg.Close()
	s, _ := signalmesh.New("order.created", "/shop", nil)
	if err := n.Publish(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	await(t, "the dead letter", func() bool { k, _ := dead.count(bridge.DeadLetterType); return k == 1 })
	await(t, "the busy destination to accept", func() bool { return eg.Stats()["busy"].Sent == 1 })
	if calls400.Load() != 1 {
		t.Errorf("a 400 was retried: %d calls", calls400.Load())
	}
	if calls429.Load() != 3 {
		t.Errorf("429 calls: %d, want 3", calls429.Load())
	}
	var dl struct {
		Destination string
		Signal      string
		Status      int
		Attempts    int
		Error       string
	}
	for id := range dead.seen {
		sig := dead.get(id)
		if err := sig.DecodeData(&dl); err != nil || sig.CauseID() != s.ID {
			t.Fatalf("dead letter %v: %v", sig, err)
		}
	}
	if dl.Destination != "strict" || dl.Signal != s.ID || dl.Status != 400 || dl.Attempts != 1 || !strings.Contains(dl.Error, "no such order") {
		t.Errorf("dead letter says %+v", dl)
	}
}

// A 429 or 503 with Retry-After is retried after the time it asks for, not
// after the (much shorter) backoff.
func TestEgressHonoursRetryAfter(t *testing.T) {
	n := newNode(t, fmt.Sprintf("after-%d", time.Now().UnixNano()), "")
	defer n.Close()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		var mu sync.Mutex
		var at []time.Time
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			at = append(at, time.Now())
			first := len(at) == 1
			mu.Unlock()
			if first {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "busy", status)
			}
		}))
		name := fmt.Sprintf("busy-%d", status)
		eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: memStore(), Logger: testLogger(t), Destinations: []bridge.Destination{
			{Name: name, URL: srv.URL, Patterns: []string{"order.**"}, Retry: bridge.Retry{Backoff: 10 * time.Millisecond}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := signalmesh.New("order.created", "/shop", nil)
		if err := n.Publish(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		await(t, "the destination to accept", func() bool { return eg.Stats()[name].Sent == 1 })
		if err := eg.Close(); err != nil {
			t.Error(err)
		}
		srv.Close()
		if len(at) != 2 {
			t.Fatalf("%d: %d requests, want 2", status, len(at))
		}
		if gap := at[1].Sub(at[0]); gap < time.Second {
			t.Errorf("%d: retried after %v, before the Retry-After of 1 s", status, gap)
		}
	}
}
