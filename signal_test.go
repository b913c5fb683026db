package signalmesh_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

type order struct {
	ID    string  `json:"id"`
	Total float64 `json:"total"`
}

func mustNew(t testing.TB, typ string, data any, opts ...signalmesh.Option) *signalmesh.Signal {
	t.Helper()
	s, err := signalmesh.New(typ, "/test", data, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", typ, err)
	}
	return s
}

func TestNewFillsAttributes(t *testing.T) {
	at := time.Date(2026, 11, 22, 9, 0, 0, 123, time.UTC)
	cause := mustNew(t, "cart.checked_out", nil)
	s := mustNew(t, "order.created", order{ID: "o-1", Total: 9.5},
		signalmesh.WithClock(func() time.Time { return at }),
		signalmesh.WithSubject("o-1"), signalmesh.WithCause(cause),
		signalmesh.WithExtension("region", "eu"), signalmesh.WithExtension("hops", 3))
	if s.SpecVersion != "1.0" || s.Source != "/test" || s.Type != "order.created" || s.Subject != "o-1" {
		t.Fatalf("attributes: %+v", s)
	}
	if !s.Time.Equal(at) {
		t.Fatalf("time = %v, want %v", s.Time, at)
	}
	if s.DataContentType != "application/json" || string(s.Data) != `{"id":"o-1","total":9.5}` {
		t.Fatalf("data = %q (%s)", s.Data, s.DataContentType)
	}
	if s.CauseID() != cause.ID {
		t.Fatalf("causeid = %q, want %q", s.CauseID(), cause.ID)
	}
	if v, _ := s.Extension("hops"); v != int32(3) {
		t.Fatalf("hops = %#v, want int32(3)", v)
	}
	var got order
	if err := s.DecodeData(&got); err != nil || got.ID != "o-1" {
		t.Fatalf("DecodeData = %+v, %v", got, err)
	}
}

func TestNewDataKinds(t *testing.T) {
	for _, tc := range []struct {
		data any
		ct   string
		want string
	}{
		{nil, "", ""},
		{[]byte{0, 1, 2}, "application/octet-stream", "\x00\x01\x02"},
		{"hello", "text/plain; charset=utf-8", "hello"},
		{json.RawMessage(`[1,2]`), "application/json", "[1,2]"},
		{map[string]int{"a": 1}, "application/json", `{"a":1}`},
	} {
		s := mustNew(t, "x", tc.data)
		if s.DataContentType != tc.ct || string(s.Data) != tc.want {
			t.Errorf("New(%#v): ct %q data %q, want %q %q", tc.data, s.DataContentType, s.Data, tc.ct, tc.want)
		}
	}
	if _, err := signalmesh.New("x", "/t", json.RawMessage(`{`)); !errors.Is(err, signalmesh.ErrBadValue) {
		t.Fatalf("bad RawMessage: err = %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	valid := func() *signalmesh.Signal {
		return &signalmesh.Signal{ID: "1", Source: "/s", SpecVersion: "1.0", Type: "a.b"}
	}
	for _, tc := range []struct {
		name  string
		mod   func(*signalmesh.Signal)
		field string
		err   error
	}{
		{"empty type", func(s *signalmesh.Signal) { s.Type = "" }, "type", signalmesh.ErrRequired},
		{"type with space", func(s *signalmesh.Signal) { s.Type = "a b" }, "type", signalmesh.ErrBadType},
		{"type trailing dot", func(s *signalmesh.Signal) { s.Type = "a." }, "type", signalmesh.ErrBadType},
		{"type wildcard", func(s *signalmesh.Signal) { s.Type = "a.*" }, "type", signalmesh.ErrBadType},
		{"no id", func(s *signalmesh.Signal) { s.ID = "" }, "id", signalmesh.ErrRequired},
		{"no source", func(s *signalmesh.Signal) { s.Source = "" }, "source", signalmesh.ErrRequired},
		{"spec 0.3", func(s *signalmesh.Signal) { s.SpecVersion = "0.3" }, "specversion", signalmesh.ErrSpecVersion},
		{"upper-case ext", func(s *signalmesh.Signal) { s.Extensions = map[string]any{"Bad": "x"} }, "Bad", signalmesh.ErrBadName},
		{"ext with dash", func(s *signalmesh.Signal) { s.Extensions = map[string]any{"a-b": "x"} }, "a-b", signalmesh.ErrBadName},
		{"core name ext", func(s *signalmesh.Signal) { s.Extensions = map[string]any{"time": "x"} }, "time", signalmesh.ErrBadName},
		{"ext float", func(s *signalmesh.Signal) { s.Extensions = map[string]any{"f": 1.5} }, "f", signalmesh.ErrBadValue},
		{"causeid int", func(s *signalmesh.Signal) { s.Extensions = map[string]any{"causeid": int32(1)} }, "causeid", signalmesh.ErrBadValue},
		{"year 10000", func(s *signalmesh.Signal) { s.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time", signalmesh.ErrBadTime},
		{"odd offset", func(s *signalmesh.Signal) { s.Time = time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 7)) }, "time", signalmesh.ErrBadTime},
		{"data too large", func(s *signalmesh.Signal) { s.Data = make([]byte, 256<<10+1) }, "data", signalmesh.ErrTooLarge},
		{"bad media type", func(s *signalmesh.Signal) { s.DataContentType = "not a type" }, "datacontenttype", signalmesh.ErrBadValue},
		{"relative schema", func(s *signalmesh.Signal) { s.DataSchema = "/schema" }, "dataschema", signalmesh.ErrBadValue},
		{"invalid utf8", func(s *signalmesh.Signal) { s.Subject = "\xff" }, "subject", signalmesh.ErrBadValue},
		{"long subject", func(s *signalmesh.Signal) { s.Subject = strings.Repeat("x", 3000) }, "subject", signalmesh.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.mod(s)
			err := s.Validate()
			var fe *signalmesh.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tc.err) || fe.Field != tc.field {
				t.Fatalf("Validate() = %v, want field %q and %v", err, tc.field, tc.err)
			}
		})
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid signal: %v", err)
	}
}

func TestSetExtensionNormalizes(t *testing.T) {
	s := mustNew(t, "x", nil)
	for _, v := range []any{int(7), int8(7), int64(7), uint16(7), uint64(7)} {
		if err := s.SetExtension("n", v); err != nil {
			t.Fatalf("SetExtension(%T): %v", v, err)
		}
		if got, _ := s.Extension("n"); got != int32(7) {
			t.Fatalf("%T stored as %#v", v, got)
		}
	}
	if err := s.SetExtension("n", int64(1)<<40); !errors.Is(err, signalmesh.ErrBadValue) {
		t.Fatalf("out of range int: %v", err)
	}
	if err := s.SetExtension("n", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Extension("n"); ok {
		t.Fatal("nil did not remove the extension")
	}
}

func TestIDsStrictlyIncrease(t *testing.T) {
	// A clock that stands still, then goes backwards: ids must still increase.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []time.Duration{0, 0, 0, -time.Second, 0, time.Millisecond, 2 * time.Second}
	i := 0
	g := signalmesh.NewIDSource(func() time.Time { d := steps[i%len(steps)]; i++; return base.Add(d) }, nil)
	prev := ""
	for n := 0; n < 10000; n++ {
		id := g.NewID()
		if id <= prev {
			t.Fatalf("id %d %q not above %q", n, id, prev)
		}
		if len(id) != 36 || id[14] != '7' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("%q is not a UUIDv7", id)
		}
		prev = id
	}
	a, b := signalmesh.NewID(), signalmesh.NewID()
	if a >= b {
		t.Fatalf("process ids not increasing: %q then %q", a, b)
	}
}

func TestCloneIsDeep(t *testing.T) {
	s := mustNew(t, "x", []byte("abc"), signalmesh.WithExtension("k", "v"))
	c := s.Clone()
	c.Data[0] = 'z'
	c.Extensions["k"] = "w"
	if !bytes.Equal(s.Data, []byte("abc")) || s.Extensions["k"] != "v" {
		t.Fatal("Clone shares data or extensions")
	}
	if s.Equal(c) || !s.Equal(s.Clone()) {
		t.Fatal("Equal disagrees with Clone")
	}
}
