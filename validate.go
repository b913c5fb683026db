package signalmesh

import (
	"errors"
	"fmt"
	"hash/maphash"
	"mime"
	"net/url"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// Sentinel errors. Validation and decoding errors wrap one of these inside a
// *FieldError, so callers can test the kind with errors.Is and the field with
// errors.As.
var (
	ErrRequired    = errors.New("signalmesh: required attribute missing")
	ErrSpecVersion = errors.New("signalmesh: specversion must be \"1.0\"")
	ErrBadType     = errors.New("signalmesh: invalid type")
	ErrBadName     = errors.New("signalmesh: invalid extension name")
	ErrBadTime     = errors.New("signalmesh: invalid time")
	ErrBadValue    = errors.New("signalmesh: invalid attribute value")
	ErrTooLarge    = errors.New("signalmesh: too large")
	ErrMalformed   = errors.New("signalmesh: malformed encoding")
)

// FieldError says which attribute of a signal is wrong and why. Field is the
// CloudEvents attribute name ("type", "time", an extension name, "data", or
// "" for the encoding as a whole). Err is one of the package's sentinel errors.
type FieldError struct {
	Field  string
	Err    error
	Detail string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.Field != "" {
		b.WriteString(": field ")
		b.WriteString(e.Field)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error, detail string, args ...any) *FieldError {
	if len(args) > 0 {
		detail = fmt.Sprintf(detail, args...)
	}
	return &FieldError{Field: field, Err: err, Detail: detail}
}

// Limits bound the size of a signal. Validation enforces them, and decoders
// enforce them while decoding, before allocating, so that hostile input cannot
// make a peer allocate more than the bound.
//
// A zero field means its default (see DefaultLimits); a negative field is an
// error from Check.
type Limits struct {
	// MaxData is the largest payload, in bytes. Default 256 KiB.
	MaxData int
	// MaxAttr is the largest string attribute or extension value (and
	// extension name), in bytes. Default 2 KiB.
	MaxAttr int
	// MaxExtensions is the largest number of extension attributes. Default 32.
	MaxExtensions int
	// MaxEncoded is the largest encoded signal a decoder accepts, in bytes,
	// for either codec. Default 512 KiB, which holds the binary form of any
	// signal within the other defaults. A JSON encoding of a valid signal can
	// be larger (base64 data, escaped strings); raise it to accept those.
	MaxEncoded int
}

// DefaultLimits returns the limits used by Validate and by the codecs'
// standard-library interfaces (MarshalJSON, UnmarshalBinary, ...).
func DefaultLimits() Limits {
	return Limits{MaxData: 256 << 10, MaxAttr: 2 << 10, MaxExtensions: 32, MaxEncoded: 512 << 10}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxData == 0 {
		l.MaxData = d.MaxData
	}
	if l.MaxAttr == 0 {
		l.MaxAttr = d.MaxAttr
	}
	if l.MaxExtensions == 0 {
		l.MaxExtensions = d.MaxExtensions
	}
	if l.MaxEncoded == 0 {
		l.MaxEncoded = d.MaxEncoded
	}
	return l
}

// Check returns an error if a field of l is negative.
func (l Limits) Check() error {
	if l.MaxData < 0 || l.MaxAttr < 0 || l.MaxExtensions < 0 || l.MaxEncoded < 0 {
		return fmt.Errorf("signalmesh: negative limit in %+v", l)
	}
	return nil
}

// Validate checks s against the CloudEvents 1.0 rules, signalmesh's type
// syntax and DefaultLimits. The error is a *FieldError naming the first bad
// attribute.
func (s *Signal) Validate() error { return DefaultLimits().Validate(s) }

// Validate checks s like (*Signal).Validate, with the limits l.
func (l Limits) Validate(s *Signal) error {
	if err := l.Check(); err != nil {
		return err
	}
	l = l.withDefaults()
	if s == nil {
		return fieldErr("", ErrRequired, "nil signal")
	}
	switch {
	case s.SpecVersion == "":
		return fieldErr("specversion", ErrRequired, "")
	case s.SpecVersion != SpecVersion:
		return fieldErr("specversion", ErrSpecVersion, "got %q", clip(s.SpecVersion))
	}
	if err := l.checkAttrs(s); err != nil {
		return err
	}
	if len(s.Data) > l.MaxData {
		return fieldErr("data", ErrTooLarge, "%d bytes, limit %d", len(s.Data), l.MaxData)
	}
	return l.checkExtensions(s.Extensions)
}

func (l Limits) checkAttrs(s *Signal) error {
	for _, a := range [...]struct {
		name, v  string
		required bool
	}{
		{"id", s.ID, true}, {"source", s.Source, true}, {"type", s.Type, true},
		{"subject", s.Subject, false}, {"datacontenttype", s.DataContentType, false},
		{"dataschema", s.DataSchema, false},
	} {
		if err := l.checkString(a.name, a.v); err != nil {
			return err
		}
		if a.required && a.v == "" {
			return fieldErr(a.name, ErrRequired, "")
		}
	}
	if err := ValidType(s.Type); err != nil {
		return err
	}
	if !validSources.has(s.Source) {
		if _, err := url.Parse(s.Source); err != nil {
			return fieldErr("source", ErrBadValue, "not a URI-reference")
		}
		validSources.add(s.Source)
	}
	if s.DataContentType != "" && !validMediaTypes.has(s.DataContentType) {
		if _, _, err := mime.ParseMediaType(s.DataContentType); err != nil {
			return fieldErr("datacontenttype", ErrBadValue, "not an RFC 2046 media type: %v", err)
		}
		validMediaTypes.add(s.DataContentType)
	}
	if s.DataSchema != "" {
		if u, err := url.Parse(s.DataSchema); err != nil || !u.IsAbs() {
			return fieldErr("dataschema", ErrBadValue, "not an absolute URI")
		}
	}
	return checkTime(s)
}

// validSources and validMediaTypes remember a few sources and media types
// that parsed: most signals repeat those of earlier ones, and url.Parse
// and mime.ParseMediaType allocate on every call (the journal validates
// every signal it decodes). Both parsers are pure functions of the
// string, so a remembered string is one that would parse again.
var validSources, validMediaTypes validMemo

// validMemo holds up to 64 strings, one per slot of their hash: a string
// takes the place of the one before it in its slot.
type validMemo [64]atomic.Pointer[string]

var memoSeed = maphash.MakeSeed()

// maxMemo bounds the strings remembered (longer ones are parsed each time).
const maxMemo = 256

func (m *validMemo) has(v string) bool {
	p := m[maphash.String(memoSeed, v)%uint64(len(m))].Load()
	return p != nil && *p == v
}

func (m *validMemo) add(v string) {
	if len(v) <= maxMemo {
		v = strings.Clone(v) // not a piece of a decoded form, which it would keep
		m[maphash.String(memoSeed, v)%uint64(len(m))].Store(&v)
	}
}

func checkTime(s *Signal) error {
	if s.Time.IsZero() {
		return nil
	}
	if y := s.Time.Year(); y < 0 || y > 9999 {
		return fieldErr("time", ErrBadTime, "year %d outside RFC 3339's 0000-9999", y)
	}
	_, off := s.Time.Zone()
	if off%60 != 0 || off <= -86400 || off >= 86400 {
		return fieldErr("time", ErrBadTime, "UTC offset %ds is not RFC 3339 (whole minutes, under 24h)", off)
	}
	return nil
}

func (l Limits) checkString(field, v string) error {
	if len(v) > l.MaxAttr {
		return fieldErr(field, ErrTooLarge, "%d bytes, limit %d", len(v), l.MaxAttr)
	}
	if !utf8.ValidString(v) {
		return fieldErr(field, ErrBadValue, "not valid UTF-8")
	}
	return nil
}

func (l Limits) checkExtensions(ext map[string]any) error {
	if len(ext) > l.MaxExtensions {
		return fieldErr("", ErrTooLarge, "%d extensions, limit %d", len(ext), l.MaxExtensions)
	}
	for name, v := range ext {
		if len(name) > l.MaxAttr {
			return fieldErr(clip(name), ErrTooLarge, "extension name of %d bytes", len(name))
		}
		if err := checkExtName(name); err != nil {
			return err
		}
		switch v := v.(type) {
		case string:
			if err := l.checkString(name, v); err != nil {
				return err
			}
		case bool, int32:
			if name == ExtCauseID || name == ExtCauseSource || name == ExtPeer || name == ExtCausal || name == ExtSig {
				return fieldErr(name, ErrBadValue, "must be a string")
			}
		default:
			return fieldErr(name, ErrBadValue, "extension value of type %T (want string, bool or int32)", v)
		}
	}
	return nil
}

// coreAttrs are the CloudEvents attribute and member names an extension may not take.
var coreAttrs = map[string]bool{
	"id": true, "source": true, "specversion": true, "type": true, "subject": true,
	"time": true, "datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
}

func checkExtName(name string) error {
	if name == "" {
		return fieldErr("", ErrBadName, "empty extension name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fieldErr(clip(name), ErrBadName, "extension names use only lower-case a-z and 0-9")
		}
	}
	if coreAttrs[name] {
		return fieldErr(name, ErrBadName, "a core attribute name cannot be an extension")
	}
	return nil
}

// ValidType reports whether typ is a valid signal type: one or more
// dot-separated segments, each of ASCII letters, digits, '_' and '-'.
// The error is a *FieldError wrapping ErrBadType (or ErrRequired when empty).
func ValidType(typ string) error {
	if typ == "" {
		return fieldErr("type", ErrRequired, "")
	}
	start := 0
	for i := 0; i <= len(typ); i++ {
		if i < len(typ) && typ[i] != '.' {
			if !IsSegmentByte(typ[i]) {
				return fieldErr("type", ErrBadType, "%q: segments use only a-z, A-Z, 0-9, '_' and '-'", clip(typ))
			}
			continue
		}
		if i == start {
			return fieldErr("type", ErrBadType, "%q: empty segment (leading, trailing or doubled dot)", clip(typ))
		}
		start = i + 1
	}
	return nil
}

// IsSegmentByte reports whether c may appear in a type segment.
func IsSegmentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// clip shortens hostile values before they go into error messages.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}
