package chaos

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	causalcore "github.com/signalmesh/signalmesh/causal"
)

// Dep is one causal dependency of a signal: the signal with sequence Seq
// of the origin Origin (a peer id string), or, when only the peer's ref is
// known, of the peer whose PeerRef is Ref.
type Dep struct {
	Origin string `json:"origin,omitempty"`
	Ref    string `json:"ref,omitempty"`
	Seq    uint64 `json:"seq"`
}

// Meta is the causal metadata a signal carries, in either format the core
// stamps: the first one (meshclock, a whole vector clock whose origin entry
// is the sequence number) or the bounded one (meshcausal,
// "<seq>/<lamport>/<deps>"). A signal without metadata is weak.
type Meta struct {
	Origin  string `json:"origin,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	Lamport uint64 `json:"lamport,omitempty"`
	// Deps are the direct dependencies besides the origin's previous
	// sequence (implicit) and the cause (by id); for the clock format, the
	// clock's other entries (lower bounds, all direct enough: a subscriber
	// that delivered (o, n) delivered (o, 1..n-1) before, by FIFO).
	Deps []Dep `json:"deps,omitempty"`
}

// Weak says whether the signal carries no causal metadata.
func (m Meta) Weak() bool { return m.Seq == 0 }

// ParseMeta reads a signal's causal metadata from its extensions meshpeer
// (origin), meshcausal (the bounded format) or meshclock (the first
// format); meshcausal wins when both are set. No metadata: a weak signal.
func ParseMeta(meshpeer, meshcausal, meshclock string) (Meta, error) {
	m := Meta{Origin: meshpeer}
	switch {
	case meshcausal != "":
		return parseCausal(m, meshcausal)
	case meshclock != "":
		return parseClock(m, meshclock)
	}
	return m, nil
}

// parseCausal reads "<seq>/<lamport>/<deps>", deps "<ref>:<seq>,...".
func parseCausal(m Meta, s string) (Meta, error) {
	f := strings.SplitN(s, "/", 3)
	if len(f) != 3 {
		return m, fmt.Errorf("chaos: meshcausal %q: want <seq>/<lamport>/<deps>", s)
	}
	var err1, err2 error
	m.Seq, err1 = strconv.ParseUint(f[0], 10, 64)
	m.Lamport, err2 = strconv.ParseUint(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil || m.Seq == 0 {
		return m, fmt.Errorf("chaos: meshcausal %q: bad seq or lamport", s)
	}
	if f[2] == "" {
		return m, nil
	}
	for _, d := range strings.Split(f[2], ",") {
		ref, n, ok := strings.Cut(d, ":")
		seq, err := strconv.ParseUint(n, 10, 64)
		if !ok || err != nil || len(ref) != 11 || seq == 0 {
			return m, fmt.Errorf("chaos: meshcausal %q: bad dependency %q", s, d)
		}
		m.Deps = append(m.Deps, Dep{Ref: ref, Seq: seq})
	}
	return m, nil
}

// parseClock reads the first format: base64url of a uvarint count, then
// per entry a uvarint-prefixed peer id string and a uvarint counter.
func parseClock(m Meta, s string) (Meta, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return m, fmt.Errorf("chaos: meshclock: %w", err)
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return m, errors.New("chaos: meshclock: bad count")
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return m, errors.New("chaos: meshclock: bad peer")
		}
		p := string(b[k : k+int(l)])
		b = b[k+int(l):]
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return m, errors.New("chaos: meshclock: bad counter")
		}
		b = b[k:]
		if p == m.Origin {
			m.Seq = v
		} else {
			m.Deps = append(m.Deps, Dep{Origin: p, Seq: v})
		}
	}
	if m.Seq == 0 && n > 0 {
		return m, errors.New("chaos: meshclock: no entry for the origin")
	}
	return m, nil
}

// PeerRef is the ref of the bounded format (causal.PeerRef: the first 8
// bytes of SHA-256 over the peer id's text form, base64url without padding).
func PeerRef(id string) string { return causalcore.PeerRef(id) }
