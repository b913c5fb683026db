package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/signalmesh/signalmesh"
)

// Mode is a content mode of the CloudEvents HTTP binding.
type Mode string

const (
	// Structured: one event as application/cloudevents+json.
	Structured Mode = "structured"
	// Binary: attributes in ce-* headers, the data as the body.
	Binary Mode = "binary"
	// Batch: a JSON array of structured events,
	// application/cloudevents-batch+json.
	Batch Mode = "batch"
	// Webhook: a structured event signed with HMAC-SHA256 (see Sign), for
	// receivers that are not CloudEvents-aware.
	Webhook Mode = "webhook"
)

const (
	ctStructured = "application/cloudevents+json"
	ctBatch      = "application/cloudevents-batch+json"
)

// RequestError is a request the ingress refuses: the HTTP status to answer
// and why.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

func reqErr(status int, format string, args ...any) *RequestError {
	return &RequestError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// ReadSignals decodes the signals of a CloudEvents HTTP request whose body
// has been read: structured, binary or batch mode, told apart as the
// binding says (the media type, then the ce-specversion header). Every
// signal is validated with lim. Errors are *RequestError values: 415 for a
// body that is no CloudEvent, 400 for a malformed or invalid one.
func ReadSignals(h http.Header, body []byte, lim signalmesh.Limits) ([]*signalmesh.Signal, Mode, error) {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case mt == ctStructured:
		s, err := signalmesh.DecodeJSON(body, lim)
		if err != nil {
			return nil, Structured, reqErr(http.StatusBadRequest, "structured event: %v", err)
		}
		return []*signalmesh.Signal{s}, Structured, nil
	case mt == ctBatch:
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, Batch, reqErr(http.StatusBadRequest, "batch: not a JSON array: %v", err)
		}
		sigs := make([]*signalmesh.Signal, 0, len(raws))
		for i, raw := range raws {
			s, err := signalmesh.DecodeJSON(raw, lim)
			if err != nil {
				return nil, Batch, reqErr(http.StatusBadRequest, "batch event %d: %v", i, err)
			}
			sigs = append(sigs, s)
		}
		return sigs, Batch, nil
	case h.Get("Ce-Specversion") != "":
		s, err := readBinary(h, body, lim)
		if err != nil {
			return nil, Binary, err
		}
		return []*signalmesh.Signal{s}, Binary, nil
	}
	return nil, "", reqErr(http.StatusUnsupportedMediaType,
		"not a CloudEvent: want Content-Type %s or %s, or binary mode with ce-* headers", ctStructured, ctBatch)
}

func readBinary(h http.Header, body []byte, lim signalmesh.Limits) (*signalmesh.Signal, error) {
	s := &signalmesh.Signal{Data: body, DataContentType: h.Get("Content-Type")}
	if len(body) == 0 {
		s.Data = nil
	}
	for name, vals := range h {
		lower := strings.ToLower(name)
		if !strings.HasPrefix(lower, "ce-") || len(vals) == 0 {
			continue
		}
		attr := lower[3:]
		v, err := url.PathUnescape(vals[0])
		if err != nil {
			return nil, reqErr(http.StatusBadRequest, "header %s: %v", name, err)
		}
		switch attr {
		case "specversion":
			s.SpecVersion = v
		case "id":
			s.ID = v
		case "source":
			s.Source = v
		case "type":
			s.Type = v
		case "subject":
			s.Subject = v
		case "dataschema":
			s.DataSchema = v
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, reqErr(http.StatusBadRequest, "header %s: %v", name, err)
			}
			s.Time = t
		default:
			// Headers carry no types: an extension arrives as a string.
			if err := s.SetExtension(attr, v); err != nil {
				return nil, reqErr(http.StatusBadRequest, "header %s: %v", name, err)
			}
		}
	}
	if err := lim.Validate(s); err != nil {
		return nil, reqErr(http.StatusBadRequest, "binary event: %v", err)
	}
	return s, nil
}

// NewRequest builds a POST of sigs to url in mode. Binary and structured
// modes take one signal; batch takes any number; webhook is structured and
// signed with secret (see Sign).
func NewRequest(ctx context.Context, target string, mode Mode, sigs []*signalmesh.Signal, secret []byte) (*http.Request, error) {
	if len(sigs) == 0 {
		return nil, errors.New("bridge: no signals")
	}
	if mode != Batch && len(sigs) != 1 {
		return nil, fmt.Errorf("bridge: %s mode carries one signal, not %d", mode, len(sigs))
	}
	var body []byte
	h := http.Header{}
	var err error
	switch mode {
	case Structured, Webhook, "":
		body, err = sigs[0].MarshalJSON()
		h.Set("Content-Type", ctStructured+"; charset=utf-8")
	case Batch:
		body = append(body, '[')
		for i, s := range sigs {
			if i > 0 {
				body = append(body, ',')
			}
			if body, err = s.AppendJSON(body); err != nil {
				break
			}
		}
		body = append(body, ']')
		h.Set("Content-Type", ctBatch) // no parameter: some receivers compare the whole value
	case Binary:
		body = sigs[0].Data
		writeBinaryHeaders(h, sigs[0])
	default:
		return nil, fmt.Errorf("bridge: unknown mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if len(secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(secret, time.Now(), body))
	}
	return req, nil
}

func writeBinaryHeaders(h http.Header, s *signalmesh.Signal) {
	set := func(attr, v string) {
		if v != "" {
			h.Set("Ce-"+attr, encodeHeader(v))
		}
	}
	set("Specversion", s.SpecVersion)
	set("Id", s.ID)
	set("Source", s.Source)
	set("Type", s.Type)
	set("Subject", s.Subject)
	set("Dataschema", s.DataSchema)
	if !s.Time.IsZero() {
		set("Time", s.Time.UTC().Format(time.RFC3339Nano))
	}
	for name, v := range s.Extensions {
		switch v := v.(type) {
		case string:
			set(name, v)
		case bool:
			set(name, strconv.FormatBool(v))
		case int32:
			set(name, strconv.FormatInt(int64(v), 10))
		}
	}
	if s.DataContentType != "" {
		h.Set("Content-Type", s.DataContentType)
	}
}

// encodeHeader percent-encodes what the binding says a header value must
// not carry raw: space, '"', '%' and anything outside printable ASCII.
func encodeHeader(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == '"' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
