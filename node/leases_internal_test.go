package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/vclock"
)

// FuzzDecodeLeases: a lease message from a peer decodes to entries of
// that peer only, with at most maxLeaseAcks acknowledgements, or is
// refused; it never panics.
func FuzzDecodeLeases(f *testing.F) {
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		f.Fatal(err)
	}
	author, err := peer.IDFromPublicKey(pub)
	if err != nil {
		f.Fatal(err)
	}
	info := SubscriptionInfo{Peer: author.String(), ID: "group.g", Pattern: "order.**", Name: "group.g", Group: "g",
		Strategy: "hash:subject", Lease: time.Second, Expires: time.Unix(1e9, 0),
		Mark: vclock.Clock{}.Set("abc", 3), Took: map[string]Places{"12D3KooWx/group.g": func() Places { p := Places{}; p.add("abc", 2); return p }()}, Left: true}
	v, _ := json.Marshal(info)
	good, _ := json.Marshal(leaseMsg{Entries: []leaseEntry{{Key: subKey(info.Peer, info.ID).String(), Value: v}}, Acks: []string{"/s/x/y"}})
	f.Add(good)
	f.Add([]byte(`{"e":[],"a":["k"]}`))
	f.Add([]byte(`{"e":[],"h":"x1"}`))
	f.Add([]byte(`{"e":[{"k":"/p/x","v":{}}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		lm, err := decodeLeases(b, author)
		if err != nil {
			return
		}
		entries, vals, acks := lm.entries, lm.vals, lm.acks
		if len(lm.hello) > maxHelloLen {
			t.Fatalf("a Hello of %d bytes", len(lm.hello))
		}
		if len(entries) != len(vals) || len(acks) > maxLeaseAcks {
			t.Fatalf("%d entries, %d values, %d acks", len(entries), len(vals), len(acks))
		}
		for _, e := range entries {
			if e.owner != author {
				t.Fatalf("an entry of %s in a message of %s", e.owner, author)
			}
			if e.sub != nil && len(e.sub.Took) > maxTook {
				t.Fatalf("%d took", len(e.sub.Took))
			}
		}
	})
}
