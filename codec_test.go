package signalmesh_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

// sampleSignals covers every attribute, every data form and every extension kind.
func sampleSignals(t testing.TB) []*signalmesh.Signal {
	at := time.Date(2026, 11, 22, 9, 30, 1, 500, time.FixedZone("", 2*3600))
	all := []signalmesh.Option{
		signalmesh.WithTime(at), signalmesh.WithSubject("sub\"ject\n"),
		signalmesh.WithDataSchema("https://schemas.example/order.json"),
		signalmesh.WithCauseID("c-1"), signalmesh.WithExtension("flag", true),
		signalmesh.WithExtension("off", false), signalmesh.WithExtension("n", -42),
		signalmesh.WithExtension(signalmesh.ExtCausal, "AQID"),
	}
	return []*signalmesh.Signal{
		mustNew(t, "a", nil),
		mustNew(t, "order.created", map[string]any{"id": "o-1", "lines": []int{1, 2}}, all...),
		mustNew(t, "blob.put", []byte{0, 0xff, 'x', '\n'}, all...),
		mustNew(t, "note.text", "héllo \"world\"\t\x01", all...),
		mustNew(t, "vendor.x", `{"a": 1}`, signalmesh.WithContentType("application/vnd.x+json")),
		mustNew(t, "json.invalid", []byte("{nope"), signalmesh.WithContentType("application/json")),
		mustNew(t, "json.string", json.RawMessage(`"just a string"`)),
		mustNew(t, "no.ct", []byte(`[1, 2]`), signalmesh.WithContentType("")),
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, s := range sampleSignals(t) {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("%s: marshal: %v", s.Type, err)
		}
		var got signalmesh.Signal
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: unmarshal %s: %v", s.Type, b, err)
		}
		want := s.Clone()
		if s.Type == "no.ct" { // JSON data is compacted on the way
			want.Data = []byte(`[1,2]`)
		}
		if !got.Equal(want) {
			t.Fatalf("%s: round trip changed the signal\n got %+v\nwant %+v\njson %s", s.Type, &got, want, b)
		}
	}
}

func TestJSONShape(t *testing.T) {
	s := mustNew(t, "order.created", map[string]int{"n": 1},
		signalmesh.WithID("id-1"), signalmesh.WithTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
		signalmesh.WithExtension("b", true), signalmesh.WithExtension("a", 7))
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"specversion":"1.0","id":"id-1","source":"/test","type":"order.created","time":"2026-01-02T03:04:05Z","datacontenttype":"application/json","data":{"n":1},"a":7,"b":true}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	bin := mustNew(t, "x", []byte{1, 2, 3}, signalmesh.WithID("i"))
	if b, _ := json.Marshal(bin); !strings.Contains(string(b), `"data_base64":"AQID"`) {
		t.Fatalf("binary data not base64: %s", b)
	}
}

func TestDecodeJSONRejects(t *testing.T) {
	base := `"specversion":"1.0","id":"1","source":"/s","type":"a"`
	for _, tc := range []struct {
		in  string
		err error
	}{
		{`not json`, signalmesh.ErrMalformed},
		{`{"id":"1","source":"/s","type":"a"}`, signalmesh.ErrRequired},
		{`{"specversion":"0.3","id":"1","source":"/s","type":"a"}`, signalmesh.ErrSpecVersion},
		{`{` + base + `,"time":"yesterday"}`, signalmesh.ErrBadTime},
		{`{` + base + `,"Upper":"x"}`, signalmesh.ErrBadName},
		{`{` + base + `,"n":1.5}`, signalmesh.ErrBadValue},
		{`{` + base + `,"n":{"x":1}}`, signalmesh.ErrBadValue},
		{`{` + base + `,"n":3000000000}`, signalmesh.ErrBadValue},
		{`{` + base + `,"id":7}`, signalmesh.ErrBadValue},
		{`{` + base + `,"data":1,"data_base64":"AQ=="}`, signalmesh.ErrBadValue},
		{`{` + base + `,"data_base64":"!!"}`, signalmesh.ErrBadValue},
		{`{"specversion":"1.0","id":"1","source":"/s","type":"a..b"}`, signalmesh.ErrBadType},
		{`{` + base + `,"data":"` + strings.Repeat("x", 600<<10) + `"}`, signalmesh.ErrTooLarge},
	} {
		_, err := signalmesh.DecodeJSON([]byte(tc.in), signalmesh.Limits{})
		if !errors.Is(err, tc.err) {
			in := tc.in
			if len(in) > 80 {
				in = in[:80]
			}
			t.Errorf("DecodeJSON(%s) = %v, want %v", in, err, tc.err)
		}
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, s := range sampleSignals(t) {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got signalmesh.Signal
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", s.Type, err)
		}
		if !got.Equal(s) {
			t.Fatalf("%s: round trip changed the signal\n got %+v\nwant %+v", s.Type, &got, s)
		}
		jb, _ := json.Marshal(s)
		if len(b) >= len(jb) {
			t.Errorf("%s: binary form (%d bytes) not smaller than JSON (%d)", s.Type, len(b), len(jb))
		}
	}
}

func TestBinaryBoundsBeforeAllocating(t *testing.T) {
	s := mustNew(t, "a.b", []byte("payload"), signalmesh.WithExtension("k", "v"))
	good, _ := s.MarshalBinary()
	// A length prefix claiming 1 GiB of id: refused as too large, not allocated.
	huge := append([]byte{1, 0}, binary.AppendUvarint(nil, 1<<30)...)
	cases := map[string]struct {
		in  []byte
		err error
	}{
		"empty":           {nil, signalmesh.ErrMalformed},
		"bad version":     {append([]byte{9}, good[1:]...), signalmesh.ErrMalformed},
		"unknown flag":    {append([]byte{1, 0x40}, good[2:]...), signalmesh.ErrMalformed},
		"huge length":     {huge, signalmesh.ErrTooLarge},
		"trailing bytes":  {append(append([]byte{}, good...), 0), signalmesh.ErrMalformed},
		"over MaxEncoded": {make([]byte, 600<<10), signalmesh.ErrTooLarge},
	}
	for i := 1; i < len(good); i++ {
		cases["truncated at "+strconv.Itoa(i)] = struct {
			in  []byte
			err error
		}{good[:i], signalmesh.ErrMalformed}
	}
	for name, tc := range cases {
		if _, err := signalmesh.DecodeBinary(tc.in, signalmesh.Limits{}); !errors.Is(err, tc.err) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.err)
		}
	}
	small := signalmesh.Limits{MaxData: 4}
	if _, err := signalmesh.DecodeBinary(good, small); !errors.Is(err, signalmesh.ErrTooLarge) {
		t.Errorf("MaxData 4: err = %v", err)
	}
}

func TestMaxEncodedHoldsAnyValidBinarySignal(t *testing.T) {
	l := signalmesh.DefaultLimits()
	s := &signalmesh.Signal{SpecVersion: "1.0", Type: strings.Repeat("t", l.MaxAttr),
		ID: strings.Repeat("i", l.MaxAttr), Source: strings.Repeat("s", l.MaxAttr),
		Subject: strings.Repeat("u", l.MaxAttr), DataSchema: "https://x/" + strings.Repeat("d", l.MaxAttr-10),
		DataContentType: "application/" + strings.Repeat("c", l.MaxAttr-12),
		Time:            time.Now(), Data: make([]byte, l.MaxData), Extensions: map[string]any{}}
	for i := 0; i < l.MaxExtensions; i++ {
		s.Extensions[strings.Repeat("e", l.MaxAttr-4)+strconv.Itoa(1000+i)] = strings.Repeat("v", l.MaxAttr)
	}
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signalmesh.DecodeBinary(b, l); err != nil {
		t.Fatalf("largest valid signal (%d bytes) refused: %v", len(b), err)
	}
}
