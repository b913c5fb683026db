package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a request's HMAC signature:
//
//	Signalmesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>.<body>")>
//
// The timestamp is signed with the body, so a receiver can refuse a
// replayed request once it is older than its tolerance.
const SignatureHeader = "Signalmesh-Signature"

// DefaultMaxAge is how old a signed request may be (either way, for clock
// skew) before Verify calls it stale.
const DefaultMaxAge = 5 * time.Minute

var (
	// ErrNoSignature: the request carries no SignatureHeader.
	ErrNoSignature = errors.New("bridge: no signature")
	// ErrBadSignature: the signature header is malformed or does not match.
	ErrBadSignature = errors.New("bridge: bad signature")
	// ErrStale: the signed timestamp is further than the tolerance from now.
	ErrStale = errors.New("bridge: stale signature timestamp")
)

// Sign returns the SignatureHeader value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a SignatureHeader value against body: the MAC must match
// and the timestamp be within maxAge of now (DefaultMaxAge when 0). This is
// what a webhook receiver calls.
func Verify(secret []byte, header string, body []byte, now time.Time, maxAge time.Duration) error {
	if header == "" {
		return ErrNoSignature
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no timestamp", ErrBadSignature)
	}
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(secret, ts, body)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(unix, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("%w: signed %v ago, tolerance %v", ErrStale, d.Round(time.Second), maxAge)
	}
	return nil
}
