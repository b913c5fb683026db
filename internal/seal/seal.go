// Package seal signs the small control messages signalmesh peers gossip
// (quorum acks, peer announcements, leases, journal head announcements)
// with the sender's libp2p key.
//
// A node's GossipSub does not sign its messages (StrictNoSign): a signal
// carries its origin's signature end to end (meshsig), so a second,
// per-hop signature of every gossip message would double the verification
// work of the fast path for nothing. The control topics, whose messages
// carry no signal, need their sender authenticated all the same: their
// messages are sealed envelopes.
//
// An envelope is, in this order: a version byte (1), the signer's peer id
// (uvarint length, bytes), a nonce (uvarint), the body (uvarint length,
// bytes), and the signature (uvarint length, bytes) over the domain, the
// signer, the nonce and the body. The domain is the topic: an envelope
// made for one topic (or mesh) does not open on another. The nonce makes
// two envelopes of one body different messages (a lease renewed with the
// same content is a new message, not a duplicate GossipSub drops). Only the
// canonical encoding opens: a message has one form.
package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	version = 1
	// MaxID is the longest signer id an envelope takes: peer ids with an
	// inline key (Ed25519, secp256k1, ECDSA P-256) are at most 44 bytes;
	// keys too long to inline cannot be checked from the id.
	MaxID = 64
	// MaxSig is the longest signature an envelope takes (Ed25519: 64;
	// ECDSA: up to 72).
	MaxSig    = 80
	domainTag = "signalmesh/seal/v1\x00"
)

// Overhead is the most an envelope adds to its body.
const Overhead = 1 + 4*binary.MaxVarintLen64 + MaxID + MaxSig

// ErrSeal: an envelope that does not decode, is not for this domain, or
// whose signature does not verify with its signer's key.
var ErrSeal = errors.New("seal: bad envelope")

var nonces atomic.Uint64

func init() { nonces.Store(uint64(time.Now().UnixNano())) }

// Seal returns body in an envelope for domain, signed with key.
func Seal(key crypto.PrivKey, domain string, body []byte) ([]byte, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if len(id) > MaxID {
		return nil, fmt.Errorf("seal: a %d-byte peer id (at most %d: a key inlined in the id)", len(id), MaxID)
	}
	nonce := nonces.Add(1)
	sig, err := key.Sign(signed(domain, []byte(id), nonce, body))
	if err != nil {
		return nil, fmt.Errorf("seal: sign: %w", err)
	}
	if len(sig) == 0 || len(sig) > MaxSig {
		return nil, fmt.Errorf("seal: a %d-byte signature", len(sig))
	}
	return encode([]byte(id), nonce, body, sig), nil
}

// encode writes an envelope's fields in their one form.
func encode(id []byte, nonce uint64, body, sig []byte) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(id)+len(body)+len(sig))
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, nonce)
	b = binary.AppendUvarint(b, uint64(len(body)))
	b = append(b, body...)
	b = binary.AppendUvarint(b, uint64(len(sig)))
	return append(b, sig...)
}

// signed is what the signature covers.
func signed(domain string, id []byte, nonce uint64, body []byte) []byte {
	b := make([]byte, 0, len(domainTag)+4*binary.MaxVarintLen64+len(domain)+len(id)+len(body))
	b = append(b, domainTag...)
	b = binary.AppendUvarint(b, uint64(len(domain)))
	b = append(b, domain...)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, nonce)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// Envelope is a decoded envelope.
type Envelope struct {
	Signer peer.ID
	Nonce  uint64
	Body   []byte // a slice of the data Parse was given
	sig    []byte
}

// Parse decodes data without checking the signature (for an envelope this
// peer sealed itself). Errors wrap ErrSeal.
func Parse(data []byte) (*Envelope, error) {
	if len(data) < 1 || data[0] != version {
		return nil, fmt.Errorf("%w: version", ErrSeal)
	}
	b := data[1:]
	id, b, ok := chunk(b, MaxID)
	if !ok || len(id) == 0 {
		return nil, fmt.Errorf("%w: signer", ErrSeal)
	}
	nonce, k := uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("%w: nonce", ErrSeal)
	}
	b = b[k:]
	body, b, ok := chunk(b, uint64(len(data)))
	if !ok {
		return nil, fmt.Errorf("%w: body", ErrSeal)
	}
	sig, b, ok := chunk(b, MaxSig)
	if !ok || len(sig) == 0 || len(b) != 0 {
		return nil, fmt.Errorf("%w: signature", ErrSeal)
	}
	signer, err := peer.IDFromBytes(id)
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %v", ErrSeal, err)
	}
	return &Envelope{Signer: signer, Nonce: nonce, Body: body, sig: sig}, nil
}

// Open decodes data and checks that its signer signed it for domain.
// Errors wrap ErrSeal.
func Open(domain string, data []byte) (*Envelope, error) {
	e, err := Parse(data)
	if err != nil {
		return nil, err
	}
	pub, err := e.Signer.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: no key in signer %s: %v", ErrSeal, e.Signer, err)
	}
	ok, err := pub.Verify(signed(domain, []byte(e.Signer), e.Nonce, e.Body), e.sig)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: signature does not verify", ErrSeal)
	}
	return e, nil
}

// chunk reads a uvarint length and that many bytes, at most limit.
func chunk(b []byte, limit uint64) (v, rest []byte, ok bool) {
	n, k := uvarint(b)
	if k <= 0 || n > limit || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// uvarint is binary.Uvarint that refuses overlong encodings (one form).
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return v, n
}
