package journal_test

import (
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// The content digest is stored in every replica's index: its value for a
// given signal must never change between versions (a reopened store
// would see conflicts where there are none).
func TestContentDigestIsStable(t *testing.T) {
	s := &signalmesh.Signal{
		ID: "42", Source: "/billing", Type: "order.paid", Subject: "o-7",
		Time:            time.Date(2026, 11, 27, 4, 5, 6, 7, time.FixedZone("x", 3600)),
		DataContentType: "application/json", DataSchema: "urn:s",
		Data: []byte(`{"total":12}`),
		Extensions: map[string]any{
			"region": "eu", "flag": true, "off": false, "n": int32(-3),
			"meshpeer": "ignored", "traceparent": "ignored",
		},
	}
	const want uint64 = 0x91fc9bb651091135 // computed by the first version (sha256.New and Writes)
	got := journal.ContentDigest(s)
	if got != want {
		t.Fatalf("ContentDigest = %#x, want %#x", got, want)
	}
}

// Keys are stored by every replica: their form must never change.
func TestKeysAreStable(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{journal.SignalKey("abcdEFGH1234", 0x1f).String(), "/s/abcdEFGH1234/000000000000001f"},
		{journal.SignalKey("r", 1<<63+5).String(), "/s/r/8000000000000005"},
		{journal.IndexKey("42", "abcdEFGH1234", 0xabc).String(), "/i/NDI/abcdEFGH1234.0000000000000abc"},
		{journal.IndexKey("a/b?é", "r", 0).String(), "/i/YS9iP8Op/r.0000000000000000"},
		{journal.EffectKey("42", "abcdEFGH1234", 0xabc).String(), "/e/NDI/abcdEFGH1234.0000000000000abc"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}
