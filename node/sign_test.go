package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

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

// batchOf returns n stamped signals of one new origin (sequences 1..n),
// unsigned, and the origin's key.
func batchOf(t testing.TB, n int) ([]*signalmesh.Signal, crypto.PrivKey) {
	return batchWith(t, n, nil)
}

// fixedBatch is batchOf with a fixed key, ids and times: the same in every
// process (a fuzz worker rebuilds it and must get the coordinator's).
func fixedBatch(t testing.TB, n int) ([]*signalmesh.Signal, crypto.PrivKey) {
	return batchWith(t, n, bytes.NewReader(make([]byte, 32)))
}

func batchWith(t testing.TB, n int, seed io.Reader) ([]*signalmesh.Signal, crypto.PrivKey) {
	t.Helper()
	priv, pub, err := crypto.GenerateEd25519Key(seed)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPublicKey(pub)
	sigs := make([]*signalmesh.Signal, n)
	for i := range sigs {
		s, err := signalmesh.New("order.line.created", "/shop/eu-1", []byte(`{"sku":"A-1","qty":2,"price":"19.90","note":"0123456789012345678901234567890123456789"}`),
			signalmesh.WithID(fmt.Sprint("id-", i)), signalmesh.WithTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
			signalmesh.WithSubject(fmt.Sprint("order-", i)),
			signalmesh.WithExtension(signalmesh.ExtPeer, id.String()),
			signalmesh.WithExtension(signalmesh.ExtCausal, causal.Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 9), Deps: []causal.Ref{{Origin: "AAAAAAAAAAA", Seq: 3}}}.Format()))
		if err != nil {
			t.Fatal(err)
		}
		sigs[i] = s
	}
	return sigs, priv
}

// Every signal of a batch, whatever its size, verifies on its own, and
// with a fresh verifier too; its proof has the size the path needs.
func TestBatchProofs(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 7, 8, 9, 31, 100, 1000, maxProofBatch + 3} {
		sigs, priv := batchOf(t, n)
		if err := SignBatch("m", priv, sigs); err != nil {
			t.Fatal(err)
		}
		v := newVerifier("m")
		for i, s := range sigs {
			if err := Verify("m", s); err != nil {
				t.Fatalf("batch %d, signal %d: %v", n, i, err)
			}
			w, _ := s.MarshalBinary()
			if err := v.verify(s, w); err != nil {
				t.Fatalf("batch %d, signal %d, verifier: %v", n, i, err)
			}
			p, err := decodeProof(s.Extensions[signalmesh.ExtSig].(string))
			if err != nil {
				t.Fatal(err)
			}
			if want := min(n-i/signChunk*signChunk, signChunk); p.size != want || len(p.path) != pathLen(p.index, p.size) || p.index != i%signChunk || p.v != 2 {
				t.Fatalf("batch %d, signal %d: proof of size %d, index %d, path %d", n, i, p.size, p.index, len(p.path))
			}
		}
	}
}

// A version 1 proof (32-byte nodes, the batch signed whole) still
// verifies, and is bound to its version: made version 2 it does not.
func TestProofVersion1Verifies(t *testing.T) {
	for _, n := range []int{1, 7, 100} {
		sigs, priv := batchOf(t, n)
		if err := signTree(1, "m", priv, sigs); err != nil {
			t.Fatal(err)
		}
		for i, s := range sigs {
			if err := Verify("m", s); err != nil {
				t.Fatalf("batch %d, signal %d: %v", n, i, err)
			}
			text := s.Extensions[signalmesh.ExtSig].(string)
			p, err := decodeProof(text)
			if err != nil || p.v != 1 || p.size != n {
				t.Fatalf("batch %d: proof %+v, %v", n, p, err)
			}
			p.v = 2 // the same signature, the path cut to 16-byte nodes
			s.Extensions[signalmesh.ExtSig] = p.encode()
			if err := Verify("m", s); err == nil {
				t.Fatalf("batch %d, signal %d: a version 1 proof verifies as version 2", n, i)
			}
		}
	}
}

// meshsig fits the extension limits at the largest batch (a node's
// MaxBatch, default 1000, and the signer's split at maxProofBatch), and
// the placeholder Publish validates with is at least as long.
func TestProofSize(t *testing.T) {
	for _, n := range []int{1000, maxProofBatch} {
		sigs, priv := batchOf(t, n)
		if err := signTree(1, "m", priv, sigs); err != nil { // the largest: one version 1 tree
			t.Fatal(err)
		}
		for _, s := range sigs {
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
		}
		if err := SignBatch("m", priv, sigs); err != nil {
			t.Fatal(err)
		}
		longest := 0
		for _, s := range sigs {
			longest = max(longest, len(s.Extensions[signalmesh.ExtSig].(string)))
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("batch %d: meshsig up to %d bytes (placeholder %d, limit %d)", n, longest, len(sigPlaceholder), signalmesh.DefaultLimits().MaxAttr)
		if longest > len(sigPlaceholder) || len(sigPlaceholder) > signalmesh.DefaultLimits().MaxAttr {
			t.Fatalf("batch %d: meshsig %d bytes, placeholder %d", n, longest, len(sigPlaceholder))
		}
	}
}

// A proof is bound to its signal, its place in the batch and the batch's
// signature: any change is refused, by a verifier that already verified
// the batch's root too.
func TestBatchProofTampered(t *testing.T) {
	sigs, priv := batchOf(t, 10)
	if err := SignBatch("m", priv, sigs); err != nil {
		t.Fatal(err)
	}
	v := newVerifier("m")
	for _, s := range sigs {
		w, _ := s.MarshalBinary()
		if err := v.verify(s, w); err != nil {
			t.Fatal(err)
		}
	}
	proofOf := func(s *signalmesh.Signal) *proof {
		p, err := decodeProof(s.Extensions[signalmesh.ExtSig].(string))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	other, _ := batchOf(t, 10)
	if err := SignBatch("m", priv, other); err != nil { // same key, other batch
		t.Fatal(err)
	}
	tampered := map[string]func(*signalmesh.Signal){
		"data":    func(s *signalmesh.Signal) { s.Data = []byte(`{}`) },
		"subject": func(s *signalmesh.Signal) { s.Subject = "order-9" },
		"index":   func(s *signalmesh.Signal) { p := proofOf(s); p.index = 5; s.Extensions[signalmesh.ExtSig] = p.encode() },
		"path": func(s *signalmesh.Signal) {
			p := proofOf(s)
			p.path[1][0] ^= 1
			s.Extensions[signalmesh.ExtSig] = p.encode()
		},
		"signature": func(s *signalmesh.Signal) {
			p := proofOf(s)
			p.sig[0] ^= 1
			s.Extensions[signalmesh.ExtSig] = p.encode()
		},
		"other batch":   func(s *signalmesh.Signal) { s.Extensions[signalmesh.ExtSig] = other[3].Extensions[signalmesh.ExtSig] },
		"other's proof": func(s *signalmesh.Signal) { s.Extensions[signalmesh.ExtSig] = sigs[4].Extensions[signalmesh.ExtSig] },
		"signature swap": func(s *signalmesh.Signal) {
			p := proofOf(s)
			p.sig = proofOf(other[3]).sig
			s.Extensions[signalmesh.ExtSig] = p.encode()
		},
	}
	for name, mut := range tampered {
		c := sigs[3].Clone()
		mut(c)
		if err := Verify("m", c); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
		w, _ := c.MarshalBinary()
		if err := v.verify(c, w); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: the verifier accepted it: %v", name, err)
		}
	}
}

// BenchmarkSignVerify measures what signing costs per signal, by batch
// size: the committer's SignBatch (encode each signal without meshsig,
// hash the tree, one Ed25519 signature, each signal's proof) and the wire
// encoding it does anyway; a replica's first verification of each signal
// of the batch (decode its key and proof, encode without meshsig, hash
// the path, Ed25519-verify the root once per batch, remember the wire
// form); and a repeated one (the put hook after gossip: a SHA-256 of the
// wire). It reports ns per signal.
func BenchmarkSignVerify(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("batch=", n), func(b *testing.B) {
			sigs, priv := batchOf(b, n)
			wires := make([][]byte, n)
			var sign, verify, again time.Duration
			for b.Loop() {
				t0 := time.Now()
				if err := SignBatch("bench", priv, sigs); err != nil {
					b.Fatal(err)
				}
				for i, s := range sigs {
					wires[i], _ = s.MarshalBinary()
				}
				t1 := time.Now()
				v := newVerifier("bench") // its caches' allocation is once per node, not per batch: not counted
				verify -= time.Since(t1)
				for i, s := range sigs {
					if err := v.verify(s, wires[i]); err != nil {
						b.Fatal(err)
					}
				}
				t2 := time.Now()
				for i, s := range sigs {
					if err := v.verify(s, wires[i]); err != nil {
						b.Fatal(err)
					}
				}
				sign, verify, again = sign+t1.Sub(t0), verify+t2.Sub(t1), again+time.Since(t2)
			}
			per := float64(b.N * n)
			b.ReportMetric(float64(sign.Nanoseconds())/per, "sign-ns/signal")
			b.ReportMetric(float64(verify.Nanoseconds())/per, "verify-ns/signal")
			b.ReportMetric(float64((sign+verify).Nanoseconds())/per, "ns/signal")
			b.ReportMetric(float64(again.Nanoseconds())/per, "again-ns/signal")
			b.ReportMetric(float64(len(sigs[n-1].Extensions[signalmesh.ExtSig].(string))), "meshsig-bytes")
		})
	}
}

// FuzzDecodeProof: a meshsig decodes to a proof only in its canonical
// form (encoding the proof gives the text back), and never panics.
func FuzzDecodeProof(f *testing.F) {
	sigs, priv := fixedBatch(f, 5)
	if err := SignBatch("m", priv, sigs); err != nil {
		f.Fatal(err)
	}
	for _, s := range sigs {
		f.Add(s.Extensions[signalmesh.ExtSig].(string))
	}
	f.Add("")
	f.Add("AQEAQA")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := decodeProof(text)
		if err != nil {
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("error %v is not ErrSignature", err)
			}
			return
		}
		if got := p.encode(); got != text {
			t.Fatalf("%q decodes, encodes as %q", text, got)
		}
		if p.index >= p.size || len(p.path) != pathLen(p.index, p.size) {
			t.Fatalf("%q: a proof of index %d of %d with %d hashes", text, p.index, p.size, len(p.path))
		}
		s := sigs[0].Clone()
		s.Extensions[signalmesh.ExtSig] = text
		if err := Verify("m", s); err == nil && text != sigs[0].Extensions[signalmesh.ExtSig] {
			t.Fatalf("%q verifies for another signal's place", text)
		}
	})
}

// FuzzVerify: whatever a peer sends, decoding and verifying it neither
// panics nor accepts a signal nobody signed.
func FuzzVerify(f *testing.F) {
	sigs, priv := fixedBatch(f, 3)
	if err := SignBatch("m", priv, sigs); err != nil {
		f.Fatal(err)
	}
	s := sigs[1]
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
