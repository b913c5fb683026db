package signalmesh

import (
	"encoding/json"
	"fmt"
	"time"
)

// Option configures a signal made by New.
type Option func(*options) error

type options struct {
	s   *Signal
	ids *IDSource
	now func() time.Time
}

// New makes a valid signal of type typ from source, with a fresh UUIDv7 id
// and the current time.
//
// data becomes the payload:
//   - nil: no data;
//   - []byte: opaque bytes, datacontenttype "application/octet-stream";
//   - string: text, datacontenttype "text/plain; charset=utf-8";
//   - json.RawMessage: a JSON text (checked), datacontenttype "application/json";
//   - anything else: marshalled with encoding/json, datacontenttype "application/json".
//
// Options may override every attribute. The result is validated with
// DefaultLimits; errors are *FieldError values.
func New(typ, source string, data any, opts ...Option) (*Signal, error) {
	o := options{s: &Signal{SpecVersion: SpecVersion, Type: typ, Source: source}, ids: defaultIDs, now: time.Now}
	if err := setData(o.s, data); err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.s.ID == "" {
		o.s.ID = o.ids.NewID()
	}
	if o.s.Time.IsZero() {
		o.s.Time = o.now().UTC()
	}
	if err := o.s.Validate(); err != nil {
		return nil, err
	}
	return o.s, nil
}

func setData(s *Signal, data any) error {
	switch d := data.(type) {
	case nil:
	case []byte:
		s.Data, s.DataContentType = d, "application/octet-stream"
	case string:
		s.Data, s.DataContentType = []byte(d), "text/plain; charset=utf-8"
	case json.RawMessage:
		if !json.Valid(d) {
			return fieldErr("data", ErrBadValue, "json.RawMessage is not valid JSON")
		}
		s.Data, s.DataContentType = d, "application/json"
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return &FieldError{Field: "data", Err: ErrBadValue, Detail: fmt.Sprintf("marshal JSON: %v", err)}
		}
		s.Data, s.DataContentType = b, "application/json"
	}
	if len(s.Data) == 0 {
		s.Data, s.DataContentType = nil, ""
	}
	return nil
}

// WithID sets the id instead of a generated UUIDv7.
func WithID(id string) Option {
	return func(o *options) error { o.s.ID = id; return nil }
}

// WithTime sets the time instead of the current time.
func WithTime(t time.Time) Option {
	return func(o *options) error { o.s.Time = t; return nil }
}

// WithClock makes New read the time from now instead of time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("signalmesh: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// WithIDSource makes New take its id from ids instead of the process-wide source.
func WithIDSource(ids *IDSource) Option {
	return func(o *options) error {
		if ids == nil {
			return fmt.Errorf("signalmesh: WithIDSource(nil)")
		}
		o.ids = ids
		return nil
	}
}

// WithSubject sets the subject attribute.
func WithSubject(subject string) Option {
	return func(o *options) error { o.s.Subject = subject; return nil }
}

// WithContentType sets datacontenttype, overriding the one New infers from data.
func WithContentType(ct string) Option {
	return func(o *options) error { o.s.DataContentType = ct; return nil }
}

// WithDataSchema sets the dataschema attribute (an absolute URI).
func WithDataSchema(uri string) Option {
	return func(o *options) error { o.s.DataSchema = uri; return nil }
}

// WithExtension sets an extension attribute (see (*Signal).SetExtension).
func WithExtension(name string, value any) Option {
	return func(o *options) error { return o.s.SetExtension(name, value) }
}

// WithCause records cause as the signal that caused this one (extension causeid).
func WithCause(cause *Signal) Option {
	return func(o *options) error {
		if cause == nil || cause.ID == "" {
			return fieldErr(ExtCauseID, ErrRequired, "WithCause needs a signal with an id")
		}
		if err := o.s.SetExtension(ExtCauseSource, cause.Source); err != nil {
			return err
		}
		return o.s.SetExtension(ExtCauseID, cause.ID)
	}
}

// WithCauseID records the id of the signal that caused this one.
func WithCauseID(id string) Option {
	return func(o *options) error { return o.s.SetExtension(ExtCauseID, id) }
}

// DecodeData unmarshals the signal's JSON data into v. It fails with
// ErrBadValue when the data is not JSON (see DataContentType).
func (s *Signal) DecodeData(v any) error {
	if !isJSONMedia(mediaType(s.DataContentType)) && !isJSONSuffix(mediaType(s.DataContentType)) {
		return fieldErr("data", ErrBadValue, "datacontenttype %q is not JSON", s.DataContentType)
	}
	if err := json.Unmarshal(s.Data, v); err != nil {
		return &FieldError{Field: "data", Err: ErrBadValue, Detail: err.Error()}
	}
	return nil
}
