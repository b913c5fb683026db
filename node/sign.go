package node

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
)

// Signed signals. The origin of a signal signs it with its libp2p key, once
// per commit batch: the committer builds a Merkle tree (SHA-256) over the
// signals of the batch, each leaf the binary wire form of one signal
// without its meshsig extension, and signs the root (with a domain prefix,
// the mesh name and the batch size). Each signal carries in meshsig its
// proof: the root's signature, its index in the batch and its Merkle path
// (the sibling hashes from its leaf up, about log2(batch) of them). So
// every attribute, the data, and the node's own extensions (meshpeer, the
// origin; meshcausal, its place and causal metadata) are signed, and a
// signal can be verified on its own, whatever became of the rest of its
// batch. The wire form is canonical (one encoding per signal, one per
// proof), and Ed25519 signatures are deterministic: a replica that
// journals another origin's signal (adoption) keeps its bytes, proof
// included, and writes the very entry the origin wrote.
//
// A verifier hashes the path (a few µs) and checks the root's signature
// once per batch: it remembers the roots it verified (see verifier).
//
// The verifying key is read from the meshpeer peer id: an Ed25519 (or
// secp256k1) peer id embeds its public key. A signal whose meshpeer does not
// (an RSA id, a hash) cannot be verified and is refused.

// sigDomain starts the signed bytes (with the proof's version after it): a
// signature made for another purpose, or for another mesh, does not
// verify here.
const sigDomain = "signalmesh/batch/1"

// Merkle tree hashing: a leaf is SHA-256(0x00 || wire form without
// meshsig), an inner node SHA-256(0x01 || left || right); a level of odd
// width passes its last node up unchanged. The prefixes keep a leaf from
// passing for an inner node (RFC 9162's second-preimage defence). In a
// version 2 proof (what a node signs) every node is the first 16 bytes of
// its SHA-256 (leaves, inner nodes, the root): forging a signal that fits
// another's path takes a second preimage of 128 bits, about 2^128 work;
// the origin itself could find two signals with one leaf in about 2^64,
// but an origin can sign two versions of its signals anyway (see
// equivocation under Trust). Version 1 (32-byte nodes) still verifies.
const (
	leafPrefix  = 0x00
	innerPrefix = 0x01
)

// Proof bounds: a batch signed at once has at most maxProofBatch signals
// (the signer splits larger ones), so a path has at most maxPathLen hashes;
// a signature has at most maxSigLen bytes (Ed25519: 64; secp256k1 DER: 72).
const (
	proofVersion  = 2 // what SignBatch writes; 1 still verifies
	maxProofBatch = 1 << 12
	maxPathLen    = 12 // ceil(log2(maxProofBatch))
	maxSigLen     = 72
)

// sigPlaceholder is as long as the largest meshsig (a proof at the largest
// batch, with the longest signature): Publish validates a signal with it,
// so that one the node cannot sign within the limits is refused there.
var sigPlaceholder = strings.Repeat("A", base64.RawURLEncoding.EncodedLen(maxProofSize))

// maxProofSize is the largest encoded proof, in bytes (before base64).
const maxProofSize = 1 + 2*binary.MaxVarintLen64 + 1 + maxSigLen + maxPathLen*sha256.Size

// ErrSignature: a signal's meshsig is missing, malformed, or does not
// verify with the key of its meshpeer.
var ErrSignature = errors.New("node: bad signal signature")

// ErrNotAllowed: a signal whose origin is not in Config.Allow (it reached
// this node through a peer that is).
var ErrNotAllowed = errors.New("node: signal of an origin not in the allow list")

// proof is what a signal's meshsig carries.
type proof struct {
	v           byte       // version: 2 (16-byte nodes) or 1 (32-byte)
	size, index int        // the batch's size and the signal's index in it
	sig         []byte     // the origin's signature of the root (rootMessage)
	path        [][32]byte // sibling hashes, from the leaf's level up
}

// pathLen is the number of sibling hashes on the path of leaf index in a
// tree of size leaves: fixed by both, so a proof has one shape.
func pathLen(index, size int) int {
	n := 0
	for w := size; w > 1; w = (w + 1) / 2 {
		if index%2 == 1 || index+1 < w {
			n++
		}
		index /= 2
	}
	return n
}

// signChunk is how many signals SignBatch signs at once: the path of each
// is 5 nodes (80 bytes), and a replica verifies one signature per 32
// signals (about 2 µs a signal). At 1,000 a signature, each signal carried
// 10 nodes of 32 bytes (a 520-byte meshsig, twice the rest of a
// 100-byte signal), and a partition heal moved three times the bytes.
const signChunk = 32

// nodeLen is the size of a tree node in a proof of version v.
func nodeLen(v byte) int {
	if v == 1 {
		return sha256.Size
	}
	return 16
}

// encode returns the text form of p: base64url (no padding) of version,
// size, index (uvarints), the signature's length (a byte) and bytes, and
// the path's nodes.
func (p *proof) encode() string {
	n := nodeLen(p.v)
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+1+len(p.sig)+len(p.path)*n)
	b = append(b, p.v)
	b = binary.AppendUvarint(b, uint64(p.size))
	b = binary.AppendUvarint(b, uint64(p.index))
	b = append(b, byte(len(p.sig)))
	b = append(b, p.sig...)
	for _, h := range p.path {
		b = append(b, h[:n]...)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

var (
	errProof = fmt.Errorf("%w: malformed %s", ErrSignature, signalmesh.ExtSig)
	// errProofVersion: a proof of a version this node does not know (a
	// newer one, maybe): refused, but no sign of a dishonest relay.
	errProofVersion = fmt.Errorf("%w: %s of an unknown version", ErrSignature, signalmesh.ExtSig)
)

// decodeProof parses a meshsig. It accepts only the canonical form (the
// one encode writes): a signal has one wire form.
func decodeProof(text string) (*proof, error) {
	if len(text) > base64.RawURLEncoding.EncodedLen(maxProofSize) {
		return nil, errProof
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(text)
	if err != nil || len(b) < 1 {
		return nil, errProof
	}
	if b[0] != 1 && b[0] != 2 {
		return nil, errProofVersion
	}
	v := b[0]
	b = b[1:]
	size, k := uvarint(b)
	if k <= 0 || size < 1 || size > maxProofBatch {
		return nil, errProof
	}
	b = b[k:]
	index, k := uvarint(b)
	if k <= 0 || index >= size {
		return nil, errProof
	}
	b = b[k:]
	if len(b) < 1 {
		return nil, errProof
	}
	l := int(b[0])
	b = b[1:]
	if l == 0 || l > maxSigLen || l > len(b) {
		return nil, errProof
	}
	p := &proof{v: v, size: int(size), index: int(index), sig: b[:l:l]}
	b = b[l:]
	n, w := pathLen(p.index, p.size), nodeLen(v)
	if len(b) != n*w {
		return nil, errProof
	}
	p.path = make([][32]byte, n)
	for i := range p.path {
		copy(p.path[i][:w], b[i*w:])
	}
	return p, nil
}

// leafHash is the leaf of a proof of version v for a wire form without
// meshsig (a node of a version 2 tree: 16 bytes, the rest zero).
func leafHash(v byte, b []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{leafPrefix})
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	clear(out[nodeLen(v):])
	return out
}

func innerHash(v byte, l, r *[32]byte) [32]byte {
	n := nodeLen(v)
	var buf [1 + 64]byte
	buf[0] = innerPrefix
	copy(buf[1:], l[:n])
	copy(buf[1+n:], r[:n])
	out := sha256.Sum256(buf[:1+2*n])
	clear(out[n:])
	return out
}

// root folds leaf up p's path to the root it proves.
func (p *proof) root(leaf [32]byte) [32]byte {
	h, index, i := leaf, p.index, 0
	for w := p.size; w > 1; w = (w + 1) / 2 {
		switch {
		case index%2 == 1:
			h = innerHash(p.v, &p.path[i], &h)
			i++
		case index+1 < w:
			h = innerHash(p.v, &h, &p.path[i])
			i++
		}
		index /= 2
	}
	return h
}

// rootMessage is what the origin signs for a batch of size signals whose
// tree (proof version v) has root, in mesh.
func rootMessage(v byte, mesh string, size int, root [32]byte) []byte {
	b := make([]byte, 0, len(sigDomain)+3*binary.MaxVarintLen64+len(mesh)+32)
	b = append(b, sigDomain...)
	if v != 1 { // version 1 signed no version
		b = append(b, '/', v)
	}
	b = binary.AppendUvarint(b, uint64(len(mesh)))
	b = append(b, mesh...)
	b = binary.AppendUvarint(b, uint64(size))
	return append(b, root[:nodeLen(v)]...)
}

// Sign sets s's meshsig: the proof of a batch of one (see SignBatch).
func Sign(mesh string, key crypto.PrivKey, s *signalmesh.Signal) error {
	return SignBatch(mesh, key, []*signalmesh.Signal{s})
}

// SignBatch sets the meshsig of each of sigs: key signs, for mesh, the
// Merkle root of their content and causal metadata (everything but
// meshsig), once per signChunk signals, and each signal gets its
// proof. Their meshpeer must be the peer id of key for the proofs to
// verify. A node signs what it publishes; SignBatch is for tools and tests
// that build signals of their own.
func SignBatch(mesh string, key crypto.PrivKey, sigs []*signalmesh.Signal) error {
	for len(sigs) > 0 {
		k := min(len(sigs), signChunk)
		if err := signTree(proofVersion, mesh, key, sigs[:k]); err != nil {
			return err
		}
		sigs = sigs[k:]
	}
	return nil
}

func signTree(v byte, mesh string, key crypto.PrivKey, sigs []*signalmesh.Signal) error {
	level := make([][32]byte, len(sigs))
	var buf []byte
	for i, s := range sigs {
		if s.Extensions == nil {
			s.Extensions = make(map[string]any, 3)
		}
		var err error
		if buf, err = s.AppendBinaryWithout(buf[:0], signalmesh.ExtSig); err != nil {
			return fmt.Errorf("node: sign %s: %w", s.ID, err)
		}
		level[i] = leafHash(v, buf)
	}
	// levels[d] is the tree's level d (0: the leaves).
	levels := [][][32]byte{level}
	for len(level) > 1 {
		up := make([][32]byte, (len(level)+1)/2)
		for i := range up {
			if 2*i+1 < len(level) {
				up[i] = innerHash(v, &level[2*i], &level[2*i+1])
			} else {
				up[i] = level[2*i]
			}
		}
		levels = append(levels, up)
		level = up
	}
	sig, err := key.Sign(rootMessage(v, mesh, len(sigs), level[0]))
	if err != nil {
		return fmt.Errorf("node: sign: %w", err)
	}
	if len(sig) == 0 || len(sig) > maxSigLen {
		return fmt.Errorf("node: sign: a %d-byte signature", len(sig))
	}
	for i, s := range sigs {
		p := proof{v: v, size: len(sigs), index: i, sig: sig, path: make([][32]byte, 0, pathLen(i, len(sigs)))}
		index := i
		for _, lv := range levels[:len(levels)-1] {
			switch {
			case index%2 == 1:
				p.path = append(p.path, lv[index-1])
			case index+1 < len(lv):
				p.path = append(p.path, lv[index+1])
			}
			index /= 2
		}
		s.Extensions[signalmesh.ExtSig] = p.encode()
	}
	return nil
}

// Verify checks that s's meshsig proves s part of a batch its meshpeer
// signed for mesh. Errors wrap ErrSignature.
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
	p, root, err := proveRoot(s)
	if err != nil {
		return err
	}
	return verifyRoot(mesh, pub, p, root)
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

// proveRoot decodes s's proof and returns it with the root it leads to
// from s.
func proveRoot(s *signalmesh.Signal) (*proof, [32]byte, error) {
	text, _ := s.Extensions[signalmesh.ExtSig].(string)
	if text == "" {
		return nil, [32]byte{}, fmt.Errorf("%w: no %s", ErrSignature, signalmesh.ExtSig)
	}
	p, err := decodeProof(text)
	if err != nil {
		return nil, [32]byte{}, err
	}
	b, err := s.AppendBinaryWithout(nil, signalmesh.ExtSig)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return p, p.root(leafHash(p.v, b)), nil
}

func verifyRoot(mesh string, pub crypto.PubKey, p *proof, root [32]byte) error {
	ok, err := pub.Verify(rootMessage(p.v, mesh, p.size, root), p.sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: does not verify", ErrSignature)
	}
	return nil
}

// verifier verifies signals for one mesh, once each: it remembers the wire
// forms it verified lately (or signed: its own), so a signal that comes by
// gossip and then in a journal block, then through the put hook, costs one
// verification, not three. It remembers the batch roots whose signature it
// verified too, so the rest of a batch costs its Merkle path only. It also
// keeps the public keys of the origins it saw. Safe for concurrent use (the
// GossipSub validator, go-ds-crdt's workers and the put hook call it at
// once).
type verifier struct {
	mesh  string
	allow map[string]bool // Config.Allow and this node, by meshpeer; nil: every origin

	mu    sync.Mutex
	keys  map[string]crypto.PubKey // by meshpeer; cleared when it reaches maxKeys
	ok    sumSet                   // wire forms verified lately
	roots sumSet                   // (origin, root, signature) verified lately
}

// wireSum identifies a wire form (or a verified root): the first 16 bytes
// of its SHA-256.
type wireSum [16]byte

func sumOf(wire []byte) wireSum {
	h := sha256.Sum256(wire)
	return wireSum(h[:16])
}

// sumSet is a set of the last len(ring) sums added (not synchronized).
type sumSet struct {
	m    map[wireSum]struct{}
	ring []wireSum // m's entries, oldest first from next
	next int
}

func newSumSet(n int) sumSet {
	return sumSet{m: make(map[wireSum]struct{}, n), ring: make([]wireSum, n)}
}

func (s *sumSet) has(sum wireSum) bool { _, ok := s.m[sum]; return ok }

func (s *sumSet) add(sum wireSum) {
	if s.has(sum) {
		return
	}
	delete(s.m, s.ring[s.next])
	s.ring[s.next] = sum
	s.next = (s.next + 1) % len(s.ring)
	s.m[sum] = struct{}{}
}

const (
	maxKeys     = 1 << 12
	verifiedLen = 1 << 16 // about 3 s of a busy mesh: gossip, journal block and put hook of a signal come closer together
	rootsLen    = 1 << 12 // batches: at least as many seconds of a busy mesh
)

func newVerifier(mesh string) *verifier {
	return &verifier{mesh: mesh, keys: map[string]crypto.PubKey{}, ok: newSumSet(verifiedLen), roots: newSumSet(rootsLen)}
}

// known records wire as verified (a signal this node signed).
func (v *verifier) known(wire []byte) { v.remember(sumOf(wire)) }

func (v *verifier) remember(sum wireSum) {
	v.mu.Lock()
	v.ok.add(sum)
	v.mu.Unlock()
}

// rootSum identifies a verified root: its proof's version, its origin, the
// root, the batch size and the signature (a signal whose proof carries
// another signature, even a valid one, is checked again: one signal, one
// wire form).
func rootSum(origin string, p *proof, root [32]byte) wireSum {
	h := sha256.New()
	var b [2 * binary.MaxVarintLen64]byte
	n := binary.PutUvarint(b[:], uint64(len(origin)))
	n += binary.PutUvarint(b[n:], uint64(p.size))
	h.Write([]byte{p.v})
	h.Write(b[:n])
	h.Write([]byte(origin))
	h.Write(root[:])
	h.Write(p.sig)
	var out [32]byte
	return wireSum(h.Sum(out[:0])[:16])
}

// verify checks the proof of s, whose wire form is wire.
func (v *verifier) verify(s *signalmesh.Signal, wire []byte) error {
	if v.allow != nil {
		if origin, _ := s.Extensions[signalmesh.ExtPeer].(string); !v.allow[origin] {
			return fmt.Errorf("%w: %q", ErrNotAllowed, origin)
		}
	}
	sum := sumOf(wire)
	v.mu.Lock()
	done := v.ok.has(sum)
	v.mu.Unlock()
	if done {
		return nil
	}
	pub, err := v.key(s)
	if err != nil {
		return err
	}
	p, root, err := proveRoot(s)
	if err != nil {
		return err
	}
	origin, _ := s.Extensions[signalmesh.ExtPeer].(string)
	rs := rootSum(origin, p, root)
	v.mu.Lock()
	done = v.roots.has(rs)
	v.mu.Unlock()
	if !done {
		if err := verifyRoot(v.mesh, pub, p, root); err != nil {
			return err
		}
	}
	v.mu.Lock()
	v.roots.add(rs)
	v.ok.add(sum)
	v.mu.Unlock()
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
