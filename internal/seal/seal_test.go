package seal

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func key(t testing.TB, seed byte) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func TestSealOpens(t *testing.T) {
	k, id := key(t, 1)
	data, err := Seal(k, "/signalmesh/m/acks", []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open("/signalmesh/m/acks", data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Signer != id || string(e.Body) != "body" {
		t.Fatalf("opened %s %q, want %s %q", e.Signer, e.Body, id, "body")
	}
	again, err := Seal(k, "/signalmesh/m/acks", []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, data) {
		t.Fatal("two envelopes of one body are the same message: GossipSub would drop the second")
	}
}

func TestOpenRefuses(t *testing.T) {
	k, _ := key(t, 1)
	other, _ := key(t, 2)
	data, err := Seal(k, "/signalmesh/m/acks", []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	// The same body and nonce signed by another key, under k's id.
	forged := encode([]byte(e.Signer), e.Nonce, e.Body, mustSign(t, other, signed("/signalmesh/m/acks", []byte(e.Signer), e.Nonce, e.Body)))
	tampered := bytes.Clone(data)
	tampered[bytes.Index(tampered, []byte("body"))] = 'B'
	cases := map[string]struct {
		domain string
		data   []byte
	}{
		"another domain": {"/signalmesh/m/leases", data},
		"another mesh":   {"/signalmesh/n/acks", data},
		"tampered body":  {"/signalmesh/m/acks", tampered},
		"another signer": {"/signalmesh/m/acks", forged},
		"trailing byte":  {"/signalmesh/m/acks", append(bytes.Clone(data), 0)},
		"empty":          {"/signalmesh/m/acks", nil},
	}
	for i := range data {
		cases["cut at "+strconv.Itoa(i)] = struct {
			domain string
			data   []byte
		}{"/signalmesh/m/acks", data[:i]}
	}
	for name, c := range cases {
		if _, err := Open(c.domain, c.data); !errors.Is(err, ErrSeal) {
			t.Errorf("%s: opened (err %v), want ErrSeal", name, err)
		}
	}
}

func mustSign(t *testing.T, k crypto.PrivKey, msg []byte) []byte {
	t.Helper()
	sig, err := k.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// FuzzOpen: no input panics, and what parses has one form (re-encoding it
// gives the input back).
func FuzzOpen(f *testing.F) {
	k, _ := key(f, 1)
	for _, body := range []string{"", "body", string(bytes.Repeat([]byte{7}, 300))} {
		data, err := Seal(k, "d", []byte(body))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if e, err := Open("d", data); err == nil && len(e.Body) > len(data) {
			t.Fatal("a body longer than the envelope")
		}
		e, err := Parse(data)
		if err != nil {
			return
		}
		if again := encode([]byte(e.Signer), e.Nonce, e.Body, e.sig); !bytes.Equal(again, data) {
			t.Fatalf("%x parses but encodes as %x: two forms", data, again)
		}
	})
}
