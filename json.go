package signalmesh

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MarshalJSON encodes s in the CloudEvents JSON structured format
// (application/cloudevents+json). Attributes come in a fixed order and
// extensions sorted by name, so equal signals encode to equal bytes.
//
// Data is written as a JSON value under "data" when the media type is JSON
// (or absent) and the bytes are valid JSON; as a JSON string when the media
// type is textual and the bytes are UTF-8 text; otherwise base64 under
// "data_base64". Every CloudEvents reader, including the official Go SDK,
// reads each of these back to the same bytes.
func (s *Signal) MarshalJSON() ([]byte, error) { return s.AppendJSON(nil) }

// AppendJSON appends the JSON encoding of s (see MarshalJSON) to b. The signal
// is validated with DefaultLimits first.
func (s *Signal) AppendJSON(b []byte) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendJSONString(b, s.ID)
	b = appendMember(b, "source", s.Source)
	b = appendMember(b, "type", s.Type)
	b = appendMember(b, "subject", s.Subject)
	if !s.Time.IsZero() {
		b = appendMember(b, "time", s.Time.Format(time.RFC3339Nano))
	}
	b = appendMember(b, "datacontenttype", s.DataContentType)
	b = appendMember(b, "dataschema", s.DataSchema)
	b = appendData(b, s.DataContentType, s.Data)
	for _, name := range slices.Sorted(maps.Keys(s.Extensions)) {
		b = append(b, ',')
		b = appendJSONString(b, name)
		b = append(b, ':')
		switch v := s.Extensions[name].(type) {
		case string:
			b = appendJSONString(b, v)
		case bool:
			b = strconv.AppendBool(b, v)
		case int32:
			b = strconv.AppendInt(b, int64(v), 10)
		}
	}
	return append(b, '}'), nil
}

func appendMember(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

func appendData(b []byte, ct string, data []byte) []byte {
	if len(data) == 0 {
		return b
	}
	mt := mediaType(ct)
	if isJSONMedia(mt) && json.Valid(data) {
		var buf bytes.Buffer
		buf.Grow(len(data))
		_ = json.Compact(&buf, data) // data is valid JSON
		b = append(b, `,"data":`...)
		return append(b, buf.Bytes()...)
	}
	if isTextMedia(mt) && utf8.Valid(data) && jsonStringLen(data) <= base64.StdEncoding.EncodedLen(len(data)) {
		b = append(b, `,"data":`...)
		return appendJSONString(b, string(data))
	}
	b = append(b, `,"data_base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, '"')
}

// mediaType returns the lower-cased media type of a content type, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isJSONMedia reports whether data of media type mt goes inline as a JSON
// value. The set is the one the CloudEvents Go SDK uses, so that the SDK reads
// what we write; an empty media type means JSON, as the spec allows.
func isJSONMedia(mt string) bool {
	switch mt {
	case "", "application/json", "text/json", "application/cloudevents+json", "application/cloudevents-batch+json":
		return true
	}
	return false
}

func isJSONSuffix(mt string) bool { return strings.HasSuffix(mt, "+json") }

func isTextMedia(mt string) bool {
	return strings.HasPrefix(mt, "text/") || isJSONSuffix(mt) || strings.HasSuffix(mt, "+xml") ||
		mt == "application/xml" || mt == "application/javascript"
}

func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonStringLen is the length of appendJSONString's output for s.
func jsonStringLen(s []byte) int {
	n := 2
	for _, c := range s {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n
}

// UnmarshalJSON decodes a CloudEvents JSON structured event into s, with
// DefaultLimits. On error s is left unchanged.
func (s *Signal) UnmarshalJSON(b []byte) error {
	d, err := DecodeJSON(b, Limits{})
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

// DecodeJSON decodes a CloudEvents JSON structured event with the limits l
// (zero fields mean defaults). Input longer than l.MaxEncoded is refused
// before it is parsed. Unknown members are extensions; their values must be
// strings, booleans, integers in int32 range, or null (absent). The result is
// validated; errors are *FieldError values.
func DecodeJSON(b []byte, l Limits) (*Signal, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	l = l.withDefaults()
	if len(b) > l.MaxEncoded {
		return nil, fieldErr("", ErrTooLarge, "%d bytes, limit %d", len(b), l.MaxEncoded)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fieldErr("", ErrMalformed, "%v", err)
	}
	if len(m) > l.MaxExtensions+len(coreAttrs) {
		return nil, fieldErr("", ErrTooLarge, "%d members", len(m))
	}
	s := &Signal{}
	for name, raw := range m {
		if err := decodeMember(s, name, raw); err != nil {
			return nil, err
		}
	}
	if err := decodeData(s, m["data"], m["data_base64"]); err != nil {
		return nil, err
	}
	if err := l.Validate(s); err != nil {
		return nil, err
	}
	return s, nil
}

func decodeMember(s *Signal, name string, raw json.RawMessage) error {
	var dst *string
	switch name {
	case "data", "data_base64":
		return nil
	case "specversion":
		dst = &s.SpecVersion
	case "id":
		dst = &s.ID
	case "source":
		dst = &s.Source
	case "type":
		dst = &s.Type
	case "subject":
		dst = &s.Subject
	case "datacontenttype":
		dst = &s.DataContentType
	case "dataschema":
		dst = &s.DataSchema
	case "time":
		var v string
		if err := decodeString(name, raw, &v); err != nil || v == "" {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return fieldErr("time", ErrBadTime, "not RFC 3339: %q", clip(v))
		}
		s.Time = t
		return nil
	default:
		return decodeExtension(s, name, raw)
	}
	return decodeString(name, raw, dst)
}

func decodeString(name string, raw json.RawMessage, dst *string) error {
	if string(raw) == "null" {
		return nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return fieldErr(name, ErrBadValue, "must be a JSON string")
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fieldErr(name, ErrMalformed, "%v", err)
	}
	return nil
}

func decodeExtension(s *Signal, name string, raw json.RawMessage) error {
	if err := checkExtName(name); err != nil {
		return err
	}
	var v any
	switch {
	case string(raw) == "null":
		return nil
	case string(raw) == "true", string(raw) == "false":
		v = string(raw) == "true"
	case raw[0] == '"':
		var str string
		if err := decodeString(name, raw, &str); err != nil {
			return err
		}
		v = str
	default:
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
			return fieldErr(name, ErrBadValue, "extension values are strings, booleans or int32 integers")
		}
		v = int32(f)
	}
	if s.Extensions == nil {
		s.Extensions = make(map[string]any, 4)
	}
	s.Extensions[name] = v
	return nil
}

func decodeData(s *Signal, data, data64 json.RawMessage) error {
	if string(data) == "null" {
		data = nil
	}
	if string(data64) == "null" {
		data64 = nil
	}
	switch {
	case data != nil && data64 != nil:
		return fieldErr("data", ErrBadValue, "both data and data_base64 are present")
	case data64 != nil:
		var str string
		if err := decodeString("data_base64", data64, &str); err != nil {
			return err
		}
		b, err := base64.StdEncoding.DecodeString(str)
		if err != nil {
			return fieldErr("data_base64", ErrBadValue, "not base64: %v", err)
		}
		s.Data = b
	case data == nil:
	case !isJSONMedia(mediaType(s.DataContentType)) && data[0] == '"':
		var str string
		if err := json.Unmarshal(data, &str); err != nil {
			return fieldErr("data", ErrMalformed, "%v", err)
		}
		s.Data = []byte(str)
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return fieldErr("data", ErrMalformed, "%v", err)
		}
		s.Data = buf.Bytes()
	}
	if len(s.Data) == 0 {
		s.Data = nil
	}
	return nil
}
