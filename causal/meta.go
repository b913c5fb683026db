package causal

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// MaxDeps is the most direct dependencies a signal's metadata may carry,
// whoever wrote it: ParseStamp refuses more. A node stamps at most its
// Params.MaxDeps (default 16, at most this). With 48, the longest stamp
// (20-digit numbers everywhere) is 1,625 bytes, under the 2,048-byte limit
// of one extension value.
const MaxDeps = 48

// RefLen is the length of a peer ref in characters.
const RefLen = 11

// ErrMeta: causal metadata that does not parse or breaks a bound.
var ErrMeta = errors.New("causal: bad metadata")

// Ref names one signal: the sequence number Seq among the signals of the
// peer whose ref is Origin.
type Ref struct {
	Origin string
	Seq    uint64
}

func (r Ref) String() string { return r.Origin + ":" + strconv.FormatUint(r.Seq, 10) }

// PeerRef is the short name of a peer in causal metadata: the first 8 bytes
// of SHA-256 over the peer id's text form (as in the meshpeer extension,
// "12D3KooW..."), base64url without padding (11 characters). A signal names its dependencies by ref, so its metadata
// does not carry a 52-character peer id per dependency. Finding a second key
// whose ref equals a given peer's costs about 2^64 key generations.
func PeerRef(peerID string) string {
	m := peerRefs.Load()
	if r, ok := m.Load(peerID); ok {
		return r.(string)
	}
	h := sha256.Sum256([]byte(peerID))
	r := base64.RawURLEncoding.EncodeToString(h[:8])
	if len(peerID) <= maxPeerRefKey {
		if _, had := m.LoadOrStore(peerID, r); !had && peerRefsN.Add(1) >= maxPeerRefs {
			peerRefs.Store(new(sync.Map)) // full: start again
			peerRefsN.Store(0)
		}
	}
	return r
}

// PeerRef remembers the refs of the peer ids it was asked for, up to
// maxPeerRefs, and then forgets them all and starts again (every journaled
// or gossiped signal names its origin's: a hash each was a tenth of a
// partition heal's loop). It is asked before a signal's signature is
// checked, so made-up ids can fill it: they cost the honest peers a hash
// each again until it has been refilled, never memory.
var (
	peerRefs  = newPeerRefs() // -> peer id -> ref; a variable's initializer, not init: other packages' variables (and tests') call PeerRef first
	peerRefsN atomic.Int64
)

func newPeerRefs() *atomic.Pointer[sync.Map] {
	p := new(atomic.Pointer[sync.Map])
	p.Store(new(sync.Map))
	return p
}

const (
	maxPeerRefs   = 4096
	maxPeerRefKey = 128 // longer than any libp2p peer id's text form
)

// Stamp is the causal metadata a publishing peer puts on a signal (the
// "meshcausal" extension, next to "meshpeer", the full origin peer id):
// the signal's sequence number among its origin's signals, a Lamport time
// for a deterministic replay order, and its direct dependencies. A signal
// also depends, implicitly, on its origin's previous signal (Seq-1) and on
// its causeid, if any.
//
// The text form is "<seq>/<lamport>/<ref>:<seq>,<ref>:<seq>...", at most
// MaxDeps dependencies: its size is bounded (at most 1,625 bytes; about 200
// with a node's default of 16) whatever the number of peers a mesh has ever
// had.
type Stamp struct {
	Seq     uint64
	Lamport uint64
	Deps    []Ref
}

// Format returns the text form of st.
func (st Stamp) Format() string {
	var b strings.Builder
	b.Grow(24 + len(st.Deps)*(RefLen+8))
	b.WriteString(strconv.FormatUint(st.Seq, 10))
	b.WriteByte('/')
	b.WriteString(strconv.FormatUint(st.Lamport, 10))
	b.WriteByte('/')
	for i, d := range st.Deps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.Origin)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(d.Seq, 10))
	}
	return b.String()
}

// ParseStamp reads the text form of a Stamp. It refuses a zero sequence
// number, more than MaxDeps dependencies, a ref that is not RefLen base64url
// characters, a zero dependency sequence and non-canonical numbers, so that
// one stamp has one text form.
func ParseStamp(s string) (Stamp, error) {
	var st Stamp
	seq, rest, ok := strings.Cut(s, "/")
	if !ok {
		return st, fmt.Errorf("%w: %q: want <seq>/<lamport>/<deps>", ErrMeta, clip(s))
	}
	lam, deps, ok := strings.Cut(rest, "/")
	if !ok {
		return st, fmt.Errorf("%w: %q: want <seq>/<lamport>/<deps>", ErrMeta, clip(s))
	}
	var err error
	if st.Seq, err = parseNum(seq); err != nil || st.Seq == 0 {
		return st, fmt.Errorf("%w: sequence %q", ErrMeta, clip(seq))
	}
	if st.Lamport, err = parseNum(lam); err != nil || st.Lamport == 0 {
		return st, fmt.Errorf("%w: lamport %q", ErrMeta, clip(lam))
	}
	if deps == "" {
		return st, nil
	}
	if n := strings.Count(deps, ",") + 1; n > MaxDeps {
		return st, fmt.Errorf("%w: %d dependencies, at most %d", ErrMeta, n, MaxDeps)
	}
	st.Deps = make([]Ref, 0, strings.Count(deps, ",")+1)
	for d := range strings.SplitSeq(deps, ",") {
		o, n, ok := strings.Cut(d, ":")
		if !ok || !validRef(o) {
			return st, fmt.Errorf("%w: dependency %q", ErrMeta, clip(d))
		}
		v, err := parseNum(n)
		if err != nil || v == 0 {
			return st, fmt.Errorf("%w: dependency %q", ErrMeta, clip(d))
		}
		st.Deps = append(st.Deps, Ref{Origin: o, Seq: v})
	}
	return st, nil
}

func parseNum(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, ErrMeta
	}
	return strconv.ParseUint(s, 10, 64)
}

func validRef(s string) bool {
	if len(s) != RefLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	// the last character of 8 bytes in unpadded base64 carries 4 bits: the
	// low 2 bits of its value are zero in the canonical form
	return strings.IndexByte(base64URL, s[RefLen-1])&3 == 0
}

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
