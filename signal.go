package signalmesh

import (
	"bytes"
	"maps"
	"math"
	"time"
)

// SpecVersion is the only CloudEvents specification version a Signal carries.
const SpecVersion = "1.0"

// Extension attributes that signalmesh itself reads or stamps. They are
// ordinary CloudEvents extensions, so a signal keeps them through any
// CloudEvents JSON round trip, and other CloudEvents tools see them as such.
const (
	// ExtCauseID holds the id of the signal that caused this one (a string).
	ExtCauseID = "causeid"
	// ExtCauseSource holds the source of the signal that caused this one
	// (a string; WithCause sets it): with it, only that (source, id) is
	// the cause; without it, a signal of any source with the id is.
	ExtCauseSource = "causesource"
	// ExtPeer holds the id of the mesh peer that published the signal (a string).
	ExtPeer = "meshpeer"
	// ExtCausal holds the signal's causal stamp: its sequence number among
	// its publishing peer's signals, a Lamport time and its direct
	// dependencies, in the text form of package causal (a string).
	ExtCausal = "meshcausal"
	// ExtSig holds the origin's signature of the signal: its libp2p key
	// signs, once per batch, the Merkle root of the binary wire forms of
	// the batch's signals without meshsig (meshpeer and meshcausal
	// included), and meshsig is the signal's proof: that signature, its
	// index and its Merkle path (see package node; a string).
	ExtSig = "meshsig"
)

// Signal is a CloudEvents 1.0 event.
//
// The zero value is not a valid signal; build one with New, or fill ID,
// Source, SpecVersion and Type and call Validate. Optional string attributes
// are absent when empty, Time is absent when zero, and Data is absent when it
// has no bytes.
//
// Data holds the event payload as bytes. When the media type of
// DataContentType is JSON (or DataContentType is empty) the bytes are a JSON
// text; otherwise they are opaque. Use DecodeData to unmarshal JSON data.
//
// Extensions maps extension attribute names to values of type string, bool or
// int32, the three types CloudEvents JSON represents natively. Use
// SetExtension to add one with its value normalized (int becomes int32).
//
// A Signal is a plain value: methods do not synchronize, and a signal shared
// between goroutines must not be modified. Clone makes an independent copy.
type Signal struct {
	ID              string
	Source          string
	SpecVersion     string
	Type            string
	Subject         string
	Time            time.Time
	DataContentType string
	DataSchema      string
	Data            []byte
	Extensions      map[string]any
}

// Extension returns the value of the named extension attribute.
func (s *Signal) Extension(name string) (any, bool) {
	v, ok := s.Extensions[name]
	return v, ok
}

// SetExtension sets the named extension attribute, or removes it when value
// is nil. Integer values of any Go integer type are stored as int32 and must
// fit; other accepted types are string and bool. The name must follow the
// CloudEvents naming rule (lower-case a-z and 0-9) and must not be a core
// attribute name. Errors are *FieldError values.
func (s *Signal) SetExtension(name string, value any) error {
	if err := checkExtName(name); err != nil {
		return err
	}
	if value == nil {
		delete(s.Extensions, name)
		return nil
	}
	v, err := normalizeExt(name, value)
	if err != nil {
		return err
	}
	if s.Extensions == nil {
		s.Extensions = make(map[string]any, 4)
	}
	s.Extensions[name] = v
	return nil
}

// CauseID returns the id of the signal that caused s, or "" when s has no cause.
func (s *Signal) CauseID() string {
	v, _ := s.Extensions[ExtCauseID].(string)
	return v
}

// CauseSource returns the source of the signal's cause, or "" when it
// names only the cause's id.
func (s *Signal) CauseSource() string {
	v, _ := s.Extensions[ExtCauseSource].(string)
	return v
}

// Clone returns a deep copy of s.
func (s *Signal) Clone() *Signal {
	c := *s
	if s.Data != nil {
		c.Data = bytes.Clone(s.Data)
	}
	if s.Extensions != nil {
		c.Extensions = maps.Clone(s.Extensions)
	}
	return &c
}

// Equal reports whether s and o carry the same attributes, data and
// extensions. Times are equal when they denote the same instant with the same
// UTC offset (so that both encode to the same RFC 3339 text).
func (s *Signal) Equal(o *Signal) bool {
	if s == nil || o == nil {
		return s == o
	}
	if s.ID != o.ID || s.Source != o.Source || s.SpecVersion != o.SpecVersion ||
		s.Type != o.Type || s.Subject != o.Subject || s.DataContentType != o.DataContentType ||
		s.DataSchema != o.DataSchema || !bytes.Equal(s.Data, o.Data) || !sameTime(s.Time, o.Time) {
		return false
	}
	if len(s.Extensions) != len(o.Extensions) {
		return false
	}
	for k, v := range s.Extensions {
		w, ok := o.Extensions[k]
		if !ok || v != w {
			return false
		}
	}
	return true
}

func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	_, oa := a.Zone()
	_, ob := b.Zone()
	return a.Equal(b) && oa == ob
}

// normalizeExt converts an extension value to one of string, bool, int32.
func normalizeExt(name string, value any) (any, error) {
	var i int64
	switch v := value.(type) {
	case string, bool, int32:
		return v, nil
	case int:
		i = int64(v)
	case int8:
		i = int64(v)
	case int16:
		i = int64(v)
	case int64:
		i = v
	case uint8:
		i = int64(v)
	case uint16:
		i = int64(v)
	case uint32:
		i = int64(v)
	case uint:
		if v > math.MaxInt32 {
			return nil, fieldErr(name, ErrBadValue, "integer out of int32 range")
		}
		i = int64(v)
	case uint64:
		if v > math.MaxInt32 {
			return nil, fieldErr(name, ErrBadValue, "integer out of int32 range")
		}
		i = int64(v)
	default:
		return nil, fieldErr(name, ErrBadValue, "extension values are string, bool or int32")
	}
	if i < math.MinInt32 || i > math.MaxInt32 {
		return nil, fieldErr(name, ErrBadValue, "integer out of int32 range")
	}
	return int32(i), nil
}
