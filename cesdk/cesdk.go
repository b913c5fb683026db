package cesdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/signalmesh/signalmesh"
)

// ErrNotPreserved is wrapped by ToEvent's error when an attribute of a
// valid signal would not come out of the SDK unchanged: the SDK keeps source
// as a URI-reference and dataschema as a URI, and re-prints them, so a value
// that is not in the normal form of a URI would change on the way.
var ErrNotPreserved = errors.New("cesdk: attribute would change in the CloudEvents SDK")

// ToEvent returns the SDK event holding every attribute, extension and data
// byte of s. s is validated first (a *signalmesh.FieldError on failure).
// The event's data is a copy of s.Data; DataBase64 is set when the data is
// not JSON (for a JSON media type) or not UTF-8 text (for any other), so the
// SDK's structured form carries the bytes unchanged.
func ToEvent(s *signalmesh.Signal) (event.Event, error) {
	if err := s.Validate(); err != nil {
		return event.Event{}, err
	}
	ec := &event.EventContextV1{ID: s.ID, Type: s.Type}
	src, err := sameURIRef("source", s.Source)
	if err != nil {
		return event.Event{}, err
	}
	ec.Source = *src
	if s.Subject != "" {
		ec.Subject = &s.Subject
	}
	if !s.Time.IsZero() {
		ec.Time = &types.Timestamp{Time: s.Time}
	}
	if s.DataContentType != "" {
		ec.DataContentType = &s.DataContentType
	}
	if s.DataSchema != "" {
		u := types.ParseURI(s.DataSchema)
		if u == nil || u.String() != s.DataSchema {
			return event.Event{}, fmt.Errorf("%w: dataschema %q is not a URI in normal form", ErrNotPreserved, s.DataSchema)
		}
		ec.DataSchema = u
	}
	for name, v := range s.Extensions {
		if err := ec.SetExtension(name, v); err != nil {
			return event.Event{}, fmt.Errorf("cesdk: extension %s: %w", name, err)
		}
	}
	e := event.Event{Context: ec}
	if len(s.Data) > 0 {
		e.DataEncoded = bytes.Clone(s.Data)
		e.DataBase64 = needsBase64(s.DataContentType, s.Data)
	}
	if err := e.Validate(); err != nil {
		return event.Event{}, fmt.Errorf("cesdk: the SDK refuses the event: %w", err)
	}
	return e, nil
}

func sameURIRef(attr, v string) (*types.URIRef, error) {
	u := types.ParseURIRef(v)
	if u == nil || u.String() != v {
		return nil, fmt.Errorf("%w: %s %q is not a URI-reference in normal form", ErrNotPreserved, attr, v)
	}
	return u, nil
}

// needsBase64 reports whether the SDK's JSON writer must base64 the data to
// keep its bytes: it writes data of a JSON media type inline as it is, and
// other data as a JSON string.
func needsBase64(ct string, data []byte) bool {
	if isSDKJSON(ct) {
		return !json.Valid(data)
	}
	return !utf8.Valid(data)
}

// isSDKJSON is the SDK's own test (event/content_type.go) of a media type
// whose data it writes inline.
func isSDKJSON(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	switch strings.ToLower(strings.TrimSpace(ct)) {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		return true
	}
	return false
}

// FromEvent returns the signal holding every attribute, extension and data
// byte of e. An event of specversion 0.3 is converted to 1.0 first (the
// SDK's AsV1). Extension values of the SDK's Binary, URI, URI-reference
// and Timestamp types become their canonical string form (see the package
// doc). The signal is validated with signalmesh.DefaultLimits; the error is
// a *signalmesh.FieldError when it fails.
func FromEvent(e event.Event) (*signalmesh.Signal, error) {
	if e.Context == nil {
		return nil, errors.New("cesdk: event has no context")
	}
	ec := e.Context.AsV1()
	s := &signalmesh.Signal{
		ID:          ec.ID,
		Source:      ec.Source.String(),
		SpecVersion: signalmesh.SpecVersion,
		Type:        ec.Type,
	}
	if ec.Subject != nil {
		s.Subject = *ec.Subject
	}
	if ec.Time != nil {
		s.Time = ec.Time.Time
	}
	if ec.DataContentType != nil {
		s.DataContentType = *ec.DataContentType
	}
	if ec.DataSchema != nil {
		s.DataSchema = ec.DataSchema.String()
	}
	if len(e.DataEncoded) > 0 {
		s.Data = bytes.Clone(e.DataEncoded)
	}
	for name, v := range ec.Extensions {
		if err := s.SetExtension(name, extValue(v)); err != nil {
			return nil, err
		}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// extValue maps an SDK extension value to one a signal holds.
func extValue(v any) any {
	switch v := v.(type) {
	case string, bool, int32:
		return v
	}
	str, err := types.Format(v)
	if err != nil {
		return fmt.Sprint(v) // not a CloudEvents type; SetExtension keeps it as text
	}
	return str
}
