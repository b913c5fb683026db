package signalmesh

import (
	"encoding/binary"
	"maps"
	"slices"
	"time"
)

// The binary wire form, used for gossip and storage. All integers are
// varints (encoding/binary); a string is a uvarint length then its bytes.
//
//	version   byte      (1)
//	flags     uvarint   bit 0 subject, 1 time, 2 datacontenttype, 3 dataschema, 4 data
//	id, source, type    strings (specversion is always "1.0" and not written)
//	subject             string, if flag 0
//	time                varint unix seconds, uvarint nanoseconds, varint UTC offset seconds, if flag 1
//	datacontenttype     string, if flag 2
//	dataschema          string, if flag 3
//	data                string, if flag 4
//	extensions          uvarint count, then per extension in ascending name order:
//	                    name string, kind byte (0 string, 1 false, 2 true, 3 int32), value
//
// The encoding is canonical: a signal has exactly one, and the decoder refuses
// unknown versions or flags, out-of-order or repeated extensions, and trailing bytes.
const wireVersion = 1

const (
	flagSubject = 1 << iota
	flagTime
	flagContentType
	flagSchema
	flagData
	flagAll = flagSubject | flagTime | flagContentType | flagSchema | flagData
)

const (
	kindString = iota
	kindFalse
	kindTrue
	kindInt32
)

// MarshalBinary encodes s in the compact binary wire form. The signal is
// validated with DefaultLimits first.
func (s *Signal) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// AppendBinary appends the binary wire form of s to b.
func (s *Signal) AppendBinary(b []byte) ([]byte, error) { return s.AppendBinaryWithout(b, "") }

// AppendBinaryWithout appends the binary wire form of s without the
// extension named ext (when s has it) to b: the wire form of a copy of s
// that lacks it, without making the copy. Signatures carried in an
// extension are made over this form.
func (s *Signal) AppendBinaryWithout(b []byte, ext string) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var flags uint64
	for i, present := range [...]bool{s.Subject != "", !s.Time.IsZero(), s.DataContentType != "", s.DataSchema != "", len(s.Data) > 0} {
		if present {
			flags |= 1 << i
		}
	}
	b = append(b, wireVersion)
	b = binary.AppendUvarint(b, flags)
	b = appendStr(b, s.ID)
	b = appendStr(b, s.Source)
	b = appendStr(b, s.Type)
	if flags&flagSubject != 0 {
		b = appendStr(b, s.Subject)
	}
	if flags&flagTime != 0 {
		_, off := s.Time.Zone()
		b = binary.AppendVarint(b, s.Time.Unix())
		b = binary.AppendUvarint(b, uint64(s.Time.Nanosecond()))
		b = binary.AppendVarint(b, int64(off))
	}
	if flags&flagContentType != 0 {
		b = appendStr(b, s.DataContentType)
	}
	if flags&flagSchema != 0 {
		b = appendStr(b, s.DataSchema)
	}
	if flags&flagData != 0 {
		b = binary.AppendUvarint(b, uint64(len(s.Data)))
		b = append(b, s.Data...)
	}
	count := len(s.Extensions)
	if _, ok := s.Extensions[ext]; ok {
		count--
	}
	b = binary.AppendUvarint(b, uint64(count))
	for _, name := range slices.Sorted(maps.Keys(s.Extensions)) {
		if name == ext {
			continue
		}
		b = appendStr(b, name)
		switch v := s.Extensions[name].(type) {
		case string:
			b = append(b, kindString)
			b = appendStr(b, v)
		case bool:
			if v {
				b = append(b, kindTrue)
			} else {
				b = append(b, kindFalse)
			}
		case int32:
			b = append(b, kindInt32)
			b = binary.AppendVarint(b, int64(v))
		}
	}
	return b, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// UnmarshalBinary decodes the binary wire form into s with DefaultLimits. On
// error s is left unchanged.
func (s *Signal) UnmarshalBinary(b []byte) error {
	d, err := DecodeBinary(b, Limits{})
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

// DecodeBinary decodes the binary wire form with the limits l (zero fields
// mean defaults). Every length is checked against the limits and the bytes
// left before anything is allocated. The result is validated; errors are
// *FieldError values wrapping ErrMalformed, ErrTooLarge or a validation error.
// The result does not alias b.
//
// Its strings are cut from two copies, one of what precedes the data and
// one of what follows it (the extensions; one copy of it all when there
// is no data), not copied one by one: a signal has a dozen strings, and
// the journal decodes every signal it receives. Neither copy holds the
// data (a []byte of its own), so a string kept from the signal keeps no
// second copy of it alive; it does keep its whole copy of the text (the
// extensions too, up to tens of KB). What keeps a string long after the
// signal (a map key, an index: the causal core's recent identities,
// journal.MemIndex) keeps a strings.Clone of it. A map store to an
// existing string key replaces the key too.
func DecodeBinary(b []byte, l Limits) (*Signal, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	l = l.withDefaults()
	if len(b) > l.MaxEncoded {
		return nil, fieldErr("", ErrTooLarge, "%d bytes, limit %d", len(b), l.MaxEncoded)
	}
	r := wireReader{b: b, l: l}
	if v := r.byte(""); r.err == nil && v != wireVersion {
		return nil, fieldErr("", ErrMalformed, "unknown wire version %d", v)
	}
	flags := r.uvarint("")
	if r.err == nil && flags&^flagAll != 0 {
		return nil, fieldErr("", ErrMalformed, "unknown flags %#x", flags)
	}
	if end, ok := headEnd(r.b, flags, l); ok {
		r.text, r.textAt = string(r.b[:end]), len(r.b)
	}
	s := &Signal{SpecVersion: SpecVersion}
	s.ID = r.str("id", l.MaxAttr)
	s.Source = r.str("source", l.MaxAttr)
	s.Type = r.str("type", l.MaxAttr)
	if flags&flagSubject != 0 {
		s.Subject = r.present("subject", l.MaxAttr)
	}
	if flags&flagTime != 0 {
		s.Time = r.time()
	}
	if flags&flagContentType != 0 {
		s.DataContentType = r.present("datacontenttype", l.MaxAttr)
	}
	if flags&flagSchema != 0 {
		s.DataSchema = r.present("dataschema", l.MaxAttr)
	}
	if flags&flagData != 0 {
		if v := r.raw("data", l.MaxData); r.err == nil && len(v) == 0 {
			r.fail("data", ErrMalformed, "flag set for an empty value")
		} else if r.err == nil {
			s.Data = append([]byte(nil), v...)
		}
	}
	if r.err == nil && len(r.b) > 0 && (r.text == "" || flags&flagData != 0) {
		r.text, r.textAt = string(r.b), len(r.b) // the extensions (len(b) was checked: the copy is bounded)
	}
	r.extensions(s)
	if r.err == nil && len(r.b) != 0 {
		r.fail("", ErrMalformed, "%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	if err := l.Validate(s); err != nil {
		return nil, err
	}
	return s, nil
}

// headEnd returns how many bytes of b, the form after its flags, precede
// the data (all of them when there is none), if the strings before the
// data fit their limits and b: false when DecodeBinary would fail there,
// which it then does reading them one by one.
func headEnd(b []byte, flags uint64, l Limits) (int, bool) {
	if flags&flagData == 0 {
		return len(b), true
	}
	i := 0
	str := func() bool {
		n, k := binary.Uvarint(b[i:])
		if k <= 0 || n > uint64(l.MaxAttr) || n > uint64(len(b)-i-k) {
			return false
		}
		i += k + int(n)
		return true
	}
	num := func() bool {
		_, k := binary.Uvarint(b[i:]) // a varint is as long as its zigzag uvarint
		i += max(k, 0)
		return k > 0
	}
	ok := str() && str() && str() &&
		(flags&flagSubject == 0 || str()) &&
		(flags&flagTime == 0 || num() && num() && num()) &&
		(flags&flagContentType == 0 || str()) &&
		(flags&flagSchema == 0 || str())
	return i, ok
}

// wireReader consumes b; after the first error every method is a no-op.
// When text is set it holds the bytes of the form from where b had
// textAt bytes left: str cuts what it reads there from it.
type wireReader struct {
	b      []byte
	l      Limits
	err    error
	text   string
	textAt int
}

func (r *wireReader) fail(field string, err error, detail string, args ...any) {
	if r.err == nil {
		r.err = fieldErr(field, err, detail, args...)
	}
}

func (r *wireReader) byte(field string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(field, ErrMalformed, "truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n > 1 && r.b[n-1] == 0 { // overlong encodings are not canonical
		r.fail(field, ErrMalformed, "bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint(field string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || n > 1 && r.b[n-1] == 0 {
		r.fail(field, ErrMalformed, "bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) str(field string, limit int) string {
	v := r.raw(field, limit)
	if len(v) == 0 {
		return ""
	}
	if i := r.textAt - len(r.b) - len(v); i >= 0 && i+len(v) <= len(r.text) {
		return r.text[i : i+len(v)]
	}
	return string(v)
}

// raw reads a string's bytes, not copied.
func (r *wireReader) raw(field string, limit int) []byte {
	n := r.uvarint(field)
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) {
		r.fail(field, ErrTooLarge, "%d bytes, limit %d", n, limit)
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(field, ErrMalformed, "length %d beyond the %d bytes left", n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// present reads an optional string whose flag is set: it must not be empty,
// or the same signal would have two encodings.
func (r *wireReader) present(field string, limit int) string {
	v := r.str(field, limit)
	if r.err == nil && v == "" {
		r.fail(field, ErrMalformed, "flag set for an empty value")
	}
	return v
}

func (r *wireReader) time() time.Time {
	sec := r.varint("time")
	nsec := r.uvarint("time")
	off := r.varint("time")
	if r.err != nil {
		return time.Time{}
	}
	// Bounds keep the arithmetic below exact; Validate checks the rest.
	const maxSec = 1 << 40
	if nsec >= 1e9 || sec < -maxSec || sec > maxSec || off <= -86400 || off >= 86400 {
		r.fail("time", ErrBadTime, "out of range")
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if off == 0 {
		t = t.UTC()
	} else {
		t = t.In(time.FixedZone("", int(off)))
	}
	if t.IsZero() {
		r.fail("time", ErrMalformed, "time flag set with the zero time")
	}
	return t
}

func (r *wireReader) extensions(s *Signal) {
	n := r.uvarint("")
	if r.err != nil {
		return
	}
	if n > uint64(r.l.MaxExtensions) {
		r.fail("", ErrTooLarge, "%d extensions, limit %d", n, r.l.MaxExtensions)
		return
	}
	if n > 0 {
		s.Extensions = make(map[string]any, n)
	}
	prev := ""
	for i := uint64(0); i < n && r.err == nil; i++ {
		name := r.str("", r.l.MaxAttr)
		if r.err == nil && i > 0 && name <= prev {
			r.fail(clip(name), ErrMalformed, "extensions out of order or repeated")
		}
		prev = name
		switch k := r.byte(name); k {
		case kindString:
			s.Extensions[name] = r.str(name, r.l.MaxAttr)
		case kindFalse, kindTrue:
			s.Extensions[name] = k == kindTrue
		case kindInt32:
			v := r.varint(name)
			if v < -1<<31 || v > 1<<31-1 {
				r.fail(name, ErrBadValue, "integer out of int32 range")
			}
			s.Extensions[name] = int32(v)
		default:
			r.fail(clip(name), ErrMalformed, "unknown extension kind %d", k)
		}
	}
}
