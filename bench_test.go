package signalmesh_test

import (
	"encoding/json"
	"testing"

	"github.com/signalmesh/signalmesh"
)

func kibSignal(b *testing.B) *signalmesh.Signal {
	payload := make([]byte, 1024)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	s, err := signalmesh.New("order.line.created", "/shop/eu-1", payload,
		signalmesh.WithSubject("order-42"), signalmesh.WithCauseID("0190a6c2-0000-7000-8000-000000000000"),
		signalmesh.WithExtension(signalmesh.ExtPeer, "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz"),
		signalmesh.WithExtension(signalmesh.ExtCausal, "AgNhYmMBA2RlZgI"))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkCodec encodes and decodes a signal with 1 KiB of binary data.
func BenchmarkCodec(b *testing.B) {
	s := kibSignal(b)
	jsonBytes, _ := json.Marshal(s)
	wire, _ := s.MarshalBinary()
	b.Logf("1 KiB payload: JSON %d bytes, binary %d bytes", len(jsonBytes), len(wire))
	b.Run("json-encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonBytes)))
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			buf, _ = s.AppendJSON(buf[:0])
		}
	})
	b.Run("json-decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonBytes)))
		for b.Loop() {
			if _, err := signalmesh.DecodeJSON(jsonBytes, signalmesh.Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binary-encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			buf, _ = s.AppendBinary(buf[:0])
		}
	})
	b.Run("binary-decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			if _, err := signalmesh.DecodeBinary(wire, signalmesh.Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signalmesh.New("order.created", "/shop", nil); err != nil {
			b.Fatal(err)
		}
	}
}
