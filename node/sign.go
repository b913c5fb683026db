package node

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
)

// Signed signals. The origin of a signal signs it with its libp2p key: the
// signature covers the mesh name and the binary wire form of the signal
// without its meshsig extension, so every attribute, the data, and the
// node's own extensions (meshpeer, the origin; meshcausal, its place and
// causal metadata) are signed. The wire form is canonical (one encoding per
// signal), and Ed25519 signatures are deterministic: the same signal signed
// twice is the same bytes, so a replica that journals another origin's
// signal (adoption) writes the very entry the origin wrote.
//
// The verifying key is read from the meshpeer peer id: an Ed25519 (or
// secp256k1) peer id embeds its public key. A signal whose meshpeer does not
// (an RSA id, a hash) cannot be verified and is refused.

// sigDomain starts the signed bytes: a signature made for another purpose,
// or for another mesh, does not verify here.
const sigDomain = "signalmesh/signal/1"

// sigPlaceholder is as long as a meshsig (an Ed25519 signature in
// base64url): Publish validates a signal with it, so that one the node
// cannot sign within the limits is refused there.
var sigPlaceholder = base64.RawURLEncoding.EncodeToString(make([]byte, 64))

// ErrSignature: a signal's meshsig is missing, malformed, or does not
// verify with the key of its meshpeer.
var ErrSignature = errors.New("node: bad signal signature")

// signedBytes appends to b what the origin signs for s in mesh.
func signedBytes(b []byte, mesh string, s *signalmesh.Signal) ([]byte, error) {
	b = append(b, sigDomain...)
	b = binary.AppendUvarint(b, uint64(len(mesh)))
	b = append(b, mesh...)
	return s.AppendBinaryWithout(b, signalmesh.ExtSig)
}

// Sign sets s's meshsig: key's signature, for mesh, of s's content and its
// causal metadata (everything but meshsig). s's meshpeer must be the peer
// id of key for the signature to verify. A node signs what it publishes;
// Sign is for tools and tests that build signals of their own.
func Sign(mesh string, key crypto.PrivKey, s *signalmesh.Signal) error {
	if s.Extensions == nil {
		s.Extensions = make(map[string]any, 3)
	}
	delete(s.Extensions, signalmesh.ExtSig)
	msg, err := signedBytes(nil, mesh, s)
	if err != nil {
		return err
	}
	sig, err := key.Sign(msg)
	if err != nil {
		return fmt.Errorf("node: sign: %w", err)
	}
	s.Extensions[signalmesh.ExtSig] = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// Verify checks that s's meshsig is the signature, for mesh, of its
// meshpeer over s. Errors wrap ErrSignature.
func Verify(mesh string, s *signalmesh.Signal) error {
	id, _ := s.Extensions[signalmesh.ExtPeer].(string)
	pid, err := originID(id)
	if err != nil {
		return err
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: no public key in meshpeer %q: %v", ErrSignature, id, err)
	}
	return verifyWith(mesh, pub, s)
}

// originID parses a meshpeer: a peer id in its canonical text form (the
// origin's journal ref is a hash of that text: one key, one origin).
func originID(id string) (peer.ID, error) {
	pid, err := peer.Decode(id)
	if err != nil || pid.String() != id {
		return "", fmt.Errorf("%w: meshpeer %q is not a peer id in canonical form", ErrSignature, id)
	}
	return pid, nil
}

func verifyWith(mesh string, pub crypto.PubKey, s *signalmesh.Signal) error {
	text, _ := s.Extensions[signalmesh.ExtSig].(string)
	if text == "" {
		return fmt.Errorf("%w: no %s", ErrSignature, signalmesh.ExtSig)
	}
	sig, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil {
		return fmt.Errorf("%w: %s is not base64url", ErrSignature, signalmesh.ExtSig)
	}
	msg, err := signedBytes(nil, mesh, s)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	ok, err := pub.Verify(msg, sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: does not verify", ErrSignature)
	}
	return nil
}

// verifier verifies signals for one mesh, once each: it remembers the wire
// forms it verified lately (or signed: its own), so a signal that comes by
// gossip and then in a journal block, then through the put hook, costs one
// verification, not three. It also keeps the public keys of the origins it
// saw. Safe for concurrent use (the GossipSub validator, go-ds-crdt's
// workers and the put hook call it at once).
type verifier struct {
	mesh string

	mu   sync.Mutex
	keys map[string]crypto.PubKey // by meshpeer; cleared when it reaches maxKeys
	ok   map[wireSum]struct{}     // wire forms verified lately
	ring []wireSum                // ok's entries, oldest first from next
	next int
}

// wireSum identifies a wire form: the first 16 bytes of its SHA-256.
type wireSum [16]byte

func sumOf(wire []byte) wireSum {
	h := sha256.Sum256(wire)
	return wireSum(h[:16])
}

const (
	maxKeys     = 1 << 12
	verifiedLen = 1 << 16 // about 3 s of a busy mesh: gossip, journal block and put hook of a signal come closer together
)

func newVerifier(mesh string) *verifier {
	return &verifier{mesh: mesh, keys: map[string]crypto.PubKey{}, ok: make(map[wireSum]struct{}, verifiedLen),
		ring: make([]wireSum, verifiedLen)}
}

// known records wire as verified (a signal this node signed).
func (v *verifier) known(wire []byte) { v.remember(sumOf(wire)) }

func (v *verifier) remember(sum wireSum) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.ok[sum]; ok {
		return
	}
	delete(v.ok, v.ring[v.next])
	v.ring[v.next] = sum
	v.next = (v.next + 1) % len(v.ring)
	v.ok[sum] = struct{}{}
}

// verify checks the signature of s, whose wire form is wire.
func (v *verifier) verify(s *signalmesh.Signal, wire []byte) error {
	sum := sumOf(wire)
	v.mu.Lock()
	_, done := v.ok[sum]
	v.mu.Unlock()
	if done {
		return nil
	}
	pub, err := v.key(s)
	if err != nil {
		return err
	}
	if err := verifyWith(v.mesh, pub, s); err != nil {
		return err
	}
	v.remember(sum)
	return nil
}

func (v *verifier) key(s *signalmesh.Signal) (crypto.PubKey, error) {
	id, _ := s.Extensions[signalmesh.ExtPeer].(string)
	v.mu.Lock()
	pub, ok := v.keys[id]
	v.mu.Unlock()
	if ok {
		return pub, nil
	}
	pid, err := originID(id)
	if err != nil {
		return nil, err
	}
	if pub, err = pid.ExtractPublicKey(); err != nil {
		return nil, fmt.Errorf("%w: no public key in meshpeer %q: %v", ErrSignature, id, err)
	}
	v.mu.Lock()
	if len(v.keys) >= maxKeys {
		clear(v.keys)
	}
	v.keys[id] = pub
	v.mu.Unlock()
	return pub, nil
}
