package node

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// signedSignal is a stamped signal with 100 bytes of data, signed by a new
// key, as the committer makes them.
func signedSignal(t testing.TB, mesh string) (*signalmesh.Signal, crypto.PrivKey) {
	t.Helper()
	priv, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPublicKey(pub)
	s, err := signalmesh.New("order.line.created", "/shop/eu-1", []byte(`{"sku":"A-1","qty":2,"price":"19.90","note":"0123456789012345678901234567890123456789"}`),
		signalmesh.WithSubject("order-42"),
		signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
		signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: 7, Lamport: 9, Deps: []causal.Ref{{Origin: "AAAAAAAAAAA", Seq: 3}}}.Format()))
	if err != nil {
		t.Fatal(err)
	}
	if err := Sign(mesh, priv, s); err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func TestSignVerify(t *testing.T) {
	s, _ := signedSignal(t, "m")
	if err := Verify("m", s); err != nil {
		t.Fatalf("a signed signal: %v", err)
	}
	if err := Verify("other", s); !errors.Is(err, ErrSignature) {
		t.Fatalf("verified for another mesh: %v", err)
	}
	again := s.Clone()
	if err := Verify("m", again); err != nil {
		t.Fatal(err)
	}
	w1, _ := s.MarshalBinary()
	_, priv := signedSignal(t, "m")
	tampered := map[string]func(*signalmesh.Signal){
		"data": func(s *signalmesh.Signal) { s.Data = []byte(`{"sku":"A-1","qty":200}`) },
		"type": func(s *signalmesh.Signal) { s.Type = "order.line.deleted" },
		"stamp": func(s *signalmesh.Signal) {
			s.Extensions[signalmesh.ExtCausal] = causal.Stamp{Seq: 8, Lamport: 9}.Format()
		},
		"extension":  func(s *signalmesh.Signal) { s.Extensions["tenant"] = "x" },
		"no sig":     func(s *signalmesh.Signal) { delete(s.Extensions, signalmesh.ExtSig) },
		"bad base64": func(s *signalmesh.Signal) { s.Extensions[signalmesh.ExtSig] = "!!" },
		"other key": func(s *signalmesh.Signal) {
			if err := Sign("m", priv, s); err != nil {
				t.Fatal(err)
			}
		},
		"peer not canonical": func(s *signalmesh.Signal) {
			id, _ := peer.Decode(s.Extensions[signalmesh.ExtPeer].(string))
			s.Extensions[signalmesh.ExtPeer] = peer.ToCid(id).String()
		},
	}
	for name, mut := range tampered {
		c := s.Clone()
		mut(c)
		if err := Verify("m", c); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
		v := newVerifier("m")
		w, _ := c.MarshalBinary()
		if err := v.verify(c, w); err == nil {
			t.Errorf("%s: the verifier accepted it", name)
		}
	}
	// Signing is deterministic: the same signal signed again is the same
	// wire form (adoption writes the origin's very entry).
	c := s.Clone()
	delete(c.Extensions, signalmesh.ExtSig)
	w2, _ := c.MarshalBinary()
	v := newVerifier("m")
	if err := v.verify(s, w1); err != nil || len(w2) >= len(w1) {
		t.Fatalf("verifier: %v", err)
	}
}

// The verifier remembers what it verified by the whole wire form: a known
// signature on other content is checked again, and refused.
func TestVerifierRemembersWireForms(t *testing.T) {
	s, _ := signedSignal(t, "m")
	v := newVerifier("m")
	w, _ := s.MarshalBinary()
	if err := v.verify(s, w); err != nil {
		t.Fatal(err)
	}
	c := s.Clone()
	c.Subject = "order-43"
	wc, _ := c.MarshalBinary()
	if err := v.verify(c, wc); err == nil {
		t.Fatal("a verified signature accepted on other content")
	}
}

// BenchmarkSignVerify measures what signing costs per signal: the
// committer's Sign (encode without meshsig, Ed25519 sign) and the wire
// encoding it does anyway; a replica's first verification (decode the
// key, encode without meshsig, Ed25519 verify, remember the wire form),
// and a repeated one (the put hook after gossip: a SHA-256 of the wire).
func BenchmarkSignVerify(b *testing.B) {
	s, priv := signedSignal(b, "bench")
	w, _ := s.MarshalBinary()
	b.Logf("wire form %d bytes, %d of them meshsig", len(w), len(s.Extensions[signalmesh.ExtSig].(string)))
	b.Run("sign", func(b *testing.B) {
		c := s.Clone()
		for b.Loop() {
			if err := Sign("bench", priv, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) { // for scale: what the committer did per signal before
		for b.Loop() {
			if _, err := s.MarshalBinary(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		v := newVerifier("bench")
		for b.Loop() {
			if err := verifyWith("bench", mustKey(b, v, s), s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify-again", func(b *testing.B) {
		v := newVerifier("bench")
		if err := v.verify(s, w); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := v.verify(s, w); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func mustKey(b *testing.B, v *verifier, s *signalmesh.Signal) crypto.PubKey {
	k, err := v.key(s)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// FuzzVerify: whatever a peer sends, decoding and verifying it neither
// panics nor accepts a signal nobody signed.
func FuzzVerify(f *testing.F) {
	s, _ := signedSignal(f, "m")
	w, _ := s.MarshalBinary()
	f.Add(w)
	f.Add(w[:len(w)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := signalmesh.DecodeBinary(b, signalmesh.Limits{})
		if err != nil {
			return
		}
		v := newVerifier("m")
		if err := v.verify(d, b); err == nil {
			// Only the seed's signal verifies (no other was signed).
			if !d.Equal(s) {
				t.Fatalf("verified a signal nobody signed: %x", b)
			}
		}
	})
}
