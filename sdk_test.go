package signalmesh_test

import (
	"encoding/json"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalmesh/signalmesh"
)

// Our JSON is read by the official CloudEvents Go SDK with every attribute,
// extension and data byte intact.
func TestSDKReadsOurJSON(t *testing.T) {
	for _, s := range sampleSignals(t) {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var e ce.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: SDK refused %s: %v", s.Type, b, err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("%s: SDK says invalid: %v", s.Type, err)
		}
		// Compare with our own reading of the same bytes: JSON data is
		// compacted on the way out (TestJSONRoundTrip checks the rest).
		var ours signalmesh.Signal
		if err := json.Unmarshal(b, &ours); err != nil {
			t.Fatal(err)
		}
		checkSame(t, &ours, &e)
	}
}

// JSON written by the SDK is read by signalmesh with everything intact.
func TestWeReadSDKJSON(t *testing.T) {
	type payload struct {
		N int    `json:"n"`
		S string `json:"s"`
	}
	mk := func(id string) ce.Event {
		e := ce.New()
		e.SetID(id)
		e.SetSource("https://sdk.example/src")
		e.SetType("com.example.sdk.created")
		e.SetSubject("subj")
		e.SetTime(time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC))
		e.SetDataSchema("https://schemas.example/p.json")
		e.SetExtension("causeid", "parent-1")
		e.SetExtension("count", 5)
		e.SetExtension("urgent", true)
		e.SetExtension("label", "x y")
		return e
	}
	jsonEv := mk("json")
	if err := jsonEv.SetData("application/json", payload{N: 1, S: "a"}); err != nil {
		t.Fatal(err)
	}
	textEv := mk("text")
	if err := textEv.SetData("text/plain", "plain text"); err != nil {
		t.Fatal(err)
	}
	binEv := mk("bin")
	if err := binEv.SetData("application/octet-stream", []byte{0, 1, 0xfe}); err != nil {
		t.Fatal(err)
	}
	binEv.DataBase64 = true
	noData := mk("nodata")

	for _, e := range []ce.Event{jsonEv, textEv, binEv, noData} {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var s signalmesh.Signal
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: we refused %s: %v", e.ID(), b, err)
		}
		checkSame(t, &s, &e)
		if s.CauseID() != "parent-1" {
			t.Fatalf("%s: causeid %q", e.ID(), s.CauseID())
		}
	}
}

func checkSame(t *testing.T, s *signalmesh.Signal, e *ce.Event) {
	t.Helper()
	if e.SpecVersion() != s.SpecVersion || e.ID() != s.ID || e.Source() != s.Source || e.Type() != s.Type ||
		e.Subject() != s.Subject || e.DataSchema() != s.DataSchema || e.DataContentType() != s.DataContentType {
		t.Fatalf("attributes differ:\n ours %+v\n sdk  %s", s, e)
	}
	if !e.Time().Equal(s.Time) {
		t.Fatalf("time: ours %v, sdk %v", s.Time, e.Time())
	}
	if string(e.Data()) != string(s.Data) {
		t.Fatalf("%s: data: ours %q, sdk %q", s.Type, s.Data, e.Data())
	}
	ext := e.Extensions()
	if len(ext) != len(s.Extensions) {
		t.Fatalf("extensions: ours %v, sdk %v", s.Extensions, ext)
	}
	for k, v := range s.Extensions {
		if ext[k] != v {
			t.Fatalf("extension %s: ours %#v, sdk %#v", k, v, ext[k])
		}
	}
}
