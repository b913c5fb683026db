package cesdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/cesdk"
)

func mustNew(t testing.TB, typ string, data any, opts ...signalmesh.Option) *signalmesh.Signal {
	t.Helper()
	s, err := signalmesh.New(typ, "https://shop.example/eu-1", data, opts...)
	if err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return s
}

// samples cover every attribute, the three extension types a signal holds,
// and every data mode: JSON inline, JSON media type with bytes that are not
// JSON, text, text that is not UTF-8, binary, none, and no content type.
func samples(t testing.TB) []*signalmesh.Signal {
	at := time.Date(2026, 11, 22, 9, 30, 1, 500, time.FixedZone("", 2*3600))
	all := []signalmesh.Option{
		signalmesh.WithTime(at), signalmesh.WithSubject("sub\"ject\n"),
		signalmesh.WithDataSchema("https://schemas.example/order.json"),
		signalmesh.WithCauseID("c-1"), signalmesh.WithExtension("flag", true),
		signalmesh.WithExtension("off", false), signalmesh.WithExtension("n", -42),
		signalmesh.WithExtension("max", int32(2147483647)), signalmesh.WithExtension("label", "x y/é"),
		signalmesh.WithExtension(signalmesh.ExtCausal, "AQID"),
	}
	return []*signalmesh.Signal{
		mustNew(t, "a", nil),
		mustNew(t, "order.created", map[string]any{"id": "o-1", "lines": []int{1, 2}}, all...),
		mustNew(t, "blob.put", []byte{0, 0xff, 'x', '\n'}, all...),
		mustNew(t, "note.text", "héllo \"world\"\t\x01", all...),
		mustNew(t, "note.latin1", []byte{'c', 'a', 'f', 0xe9}, signalmesh.WithContentType("text/plain; charset=iso-8859-1")),
		mustNew(t, "vendor.x", `{"a": 1}`, signalmesh.WithContentType("application/vnd.x+json")),
		mustNew(t, "json.invalid", []byte("{nope"), signalmesh.WithContentType("application/json")),
		mustNew(t, "json.string", json.RawMessage(`"just a string"`)),
		mustNew(t, "no.ct", []byte(`[1, 2]`), signalmesh.WithContentType("")),
		func() *signalmesh.Signal { s := mustNew(t, "urn.source", nil); s.Source = "urn:x:y"; return s }(),
	}
}

// In memory, FromEvent(ToEvent(s)) is s exactly, time offset included.
func TestRoundTripInMemory(t *testing.T) {
	for _, s := range samples(t) {
		e, err := cesdk.ToEvent(s)
		if err != nil {
			t.Fatalf("%s: ToEvent: %v", s.Type, err)
		}
		got, err := cesdk.FromEvent(e)
		if err != nil {
			t.Fatalf("%s: FromEvent: %v", s.Type, err)
		}
		if !got.Equal(s) {
			t.Fatalf("%s: changed\n got %+v\nwant %+v", s.Type, got, s)
		}
	}
}

// The SDK's structured JSON of ToEvent's event is what our own JSON reader
// reads as s, and the SDK's own reading of our JSON converts back to s: both
// sides agree on every data mode.
func TestStructuredJSONAgrees(t *testing.T) {
	for _, s := range samples(t) {
		e, err := cesdk.ToEvent(s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("%s: SDK marshal: %v", s.Type, err)
		}
		ours, err := signalmesh.DecodeJSON(b, signalmesh.DefaultLimits())
		if err != nil {
			t.Fatalf("%s: we cannot read the SDK's JSON %s: %v", s.Type, b, err)
		}
		if want := compacted(inUTC(s)); !ours.Equal(want) {
			t.Fatalf("%s: SDK JSON read by us\n got %+v\nwant %+v\njson %s", s.Type, ours, want, b)
		}
		mine, _ := json.Marshal(s)
		var back event.Event
		if err := json.Unmarshal(mine, &back); err != nil {
			t.Fatal(err)
		}
		got, err := cesdk.FromEvent(back)
		if err != nil {
			t.Fatal(err)
		}
		if want := compacted(s); !got.Equal(want) { // our JSON keeps the offset
			t.Fatalf("%s: our JSON through the SDK\n got %+v\nwant %+v", s.Type, got, want)
		}
	}
}

// Every signal goes through a real HTTP server in each of the SDK's three
// modes, written and read by the SDK: binary and structured with
// WriteRequest and NewEventFromHTTPRequest, batch with
// NewHTTPRequestFromEvents and NewEventsFromHTTPRequest.
func TestRoundTripHTTPModes(t *testing.T) {
	got := make(chan []event.Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var evs []event.Event
		var err error
		if cehttp.IsHTTPBatch(r.Header) {
			evs, err = cehttp.NewEventsFromHTTPRequest(r)
		} else {
			var e *event.Event
			if e, err = cehttp.NewEventFromHTTPRequest(r); err == nil {
				evs = []event.Event{*e}
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- evs
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	sigs := samples(t)
	events := make([]event.Event, len(sigs))
	for i, s := range sigs {
		var err error
		if events[i], err = cesdk.ToEvent(s); err != nil {
			t.Fatal(err)
		}
	}
	post := func(req *http.Request) []event.Event {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("server answered %s", resp.Status)
		}
		return <-got
	}
	check := func(mode string, e event.Event, want *signalmesh.Signal) {
		t.Helper()
		s, err := cesdk.FromEvent(e)
		if err != nil {
			t.Fatalf("%s %s: FromEvent: %v", mode, want.Type, err)
		}
		if !s.Equal(want) {
			t.Fatalf("%s %s: changed\n got %+v\nwant %+v", mode, want.Type, s, want)
		}
	}
	for _, force := range []struct {
		mode string
		ctx  context.Context
		want func(*signalmesh.Signal) *signalmesh.Signal
	}{
		{"binary", binding.WithForceBinary(context.Background()), func(s *signalmesh.Signal) *signalmesh.Signal { return untyped(inUTC(s)) }},
		{"structured", binding.WithForceStructured(context.Background()), func(s *signalmesh.Signal) *signalmesh.Signal { return compacted(inUTC(s)) }},
	} {
		for i, e := range events {
			req, err := cehttp.NewHTTPRequestFromEvent(force.ctx, srv.URL, e)
			if err != nil {
				t.Fatal(err)
			}
			if force.mode == "binary" && req.Header.Get("Ce-Id") == "" {
				t.Fatalf("not binary mode: %v", req.Header)
			}
			if force.mode == "binary" && strings.ContainsAny(sigs[i].Subject, "\n\r") {
				// The SDK puts attribute values in headers as they are, with
				// no percent-encoding, and net/http refuses a line break in one.
				if _, err := http.DefaultClient.Do(req); err == nil {
					t.Fatalf("%s: the SDK sent a line break in a header", sigs[i].Type)
				}
				continue
			}
			check(force.mode, post(req)[0], force.want(sigs[i]))
		}
	}
	req, err := cehttp.NewHTTPRequestFromEvents(context.Background(), srv.URL, events)
	if err != nil {
		t.Fatal(err)
	}
	batch := post(req)
	if len(batch) != len(sigs) {
		t.Fatalf("batch: %d events back, sent %d", len(batch), len(sigs))
	}
	for i, e := range batch {
		check("batch", e, compacted(inUTC(sigs[i])))
	}
}

// The SDK's extension types that a signal has no type for arrive as their
// canonical string form; an event of specversion 0.3 converts.
func TestFromEventSDKTypes(t *testing.T) {
	e := event.New(event.CloudEventsVersionV03)
	e.SetID("1")
	e.SetSource("/src")
	e.SetType("t.x")
	u, _ := url.Parse("https://example.com/a?b=c")
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", 3600))
	for name, v := range map[string]any{
		"bin": []byte{1, 2, 3}, "uri": u, "ref": types.URIRef{URL: url.URL{Path: "/rel"}},
		"ts": at, "small": int8(-3), "yes": true, "str": "s",
	} {
		e.SetExtension(name, v)
	}
	if err := e.SetData(event.TextPlain, "hi"); err != nil {
		t.Fatal(err)
	}
	s, err := cesdk.FromEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"bin": "AQID", "uri": "https://example.com/a?b=c", "ref": "/rel",
		"ts": "2026-01-02T02:04:05.000000006Z", "small": int32(-3), "yes": true, "str": "s"}
	for k, v := range want {
		if s.Extensions[k] != v {
			t.Errorf("extension %s: got %#v, want %#v", k, s.Extensions[k], v)
		}
	}
	if s.SpecVersion != "1.0" || string(s.Data) != "hi" || s.DataContentType != event.TextPlain {
		t.Fatalf("converted badly: %+v", s)
	}
}

func TestErrors(t *testing.T) {
	if _, err := cesdk.ToEvent(&signalmesh.Signal{ID: "1"}); !errors.Is(err, signalmesh.ErrRequired) {
		t.Fatalf("invalid signal: %v", err)
	}
	s := mustNew(t, "a", nil)
	s.Source = "a b" // a valid URI-reference the SDK would print as a%20b
	if _, err := cesdk.ToEvent(s); !errors.Is(err, cesdk.ErrNotPreserved) {
		t.Fatalf("source that changes: %v", err)
	}
	if _, err := cesdk.FromEvent(event.Event{}); err == nil {
		t.Fatal("event without context accepted")
	}
	e := event.New()
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("bad type!")
	if _, err := cesdk.FromEvent(e); !errors.Is(err, signalmesh.ErrBadType) {
		t.Fatalf("bad type: %v", err)
	}
}

// inUTC is s as the SDK writes it on the wire: time in UTC.
func inUTC(s *signalmesh.Signal) *signalmesh.Signal {
	c := s.Clone()
	if !c.Time.IsZero() {
		c.Time = c.Time.UTC()
	}
	return c
}

// untyped is s as binary mode carries it: every extension a string.
func untyped(s *signalmesh.Signal) *signalmesh.Signal {
	c := s.Clone()
	for k, v := range c.Extensions {
		switch v := v.(type) {
		case bool:
			c.Extensions[k] = strconv.FormatBool(v)
		case int32:
			c.Extensions[k] = strconv.Itoa(int(v))
		}
	}
	return c
}

// compacted is s as JSON carries JSON data: as a JSON value, so its
// insignificant white space goes.
func compacted(s *signalmesh.Signal) *signalmesh.Signal {
	c := s.Clone()
	switch c.DataContentType {
	case "", "application/json":
		var b bytes.Buffer
		if json.Compact(&b, c.Data) == nil && len(c.Data) > 0 {
			c.Data = b.Bytes()
		}
	}
	return c
}
