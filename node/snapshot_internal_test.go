package node

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/signalmesh/signalmesh/causal"
)

// snapRecords collects what readSnapshot reads.
type snapRecords struct {
	st     []byte
	values []snapValue
	blocks []string
}

type snapValue struct {
	key   string
	prio  uint64
	value []byte
}

func (r *snapRecords) state(b []byte) error { r.st = bytes.Clone(b); return nil }
func (r *snapRecords) value(k string, p uint64, v []byte) error {
	r.values = append(r.values, snapValue{k, p, bytes.Clone(v)})
	return nil
}
func (r *snapRecords) block(k string) error { r.blocks = append(r.blocks, k); return nil }

func (r *snapRecords) encode(t testing.TB) []byte {
	var buf bytes.Buffer
	w := &snapWriter{w: bufio.NewWriter(&buf)}
	if err := w.header(r.st); err != nil {
		t.Fatal(err)
	}
	for _, v := range r.values {
		if err := w.value(v.key, v.prio, v.value); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range r.blocks {
		if err := w.block(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.end(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A snapshot from a peer is hostile input: whatever its bytes, reading it
// ends with an error or with records that encode back to the bytes read,
// never a panic or an allocation past the bounds.
func FuzzReadSnapshot(f *testing.F) {
	good := (&snapRecords{st: []byte{stateVersion, 1, 2}, values: []snapValue{{"/s/abc/0000000000000001", 3, []byte("signal")}},
		blocks: []string{"/CIQA"}}).encode(f)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(snapshotMagic))
	f.Add(append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got snapRecords
		r := bufio.NewReader(bytes.NewReader(b))
		if err := readSnapshot(r, &got); err != nil {
			if !errors.Is(err, errSnapshot) {
				t.Fatalf("error not of errSnapshot: %v", err)
			}
			return
		}
		read := len(b) - r.Buffered()
		if again := got.encode(t); !bytes.Equal(again, b[:read]) {
			// Varints may be written longer than needed: equal records, then.
			var twice snapRecords
			if err := readSnapshot(bufio.NewReader(bytes.NewReader(again)), &twice); err != nil || len(twice.values) != len(got.values) || len(twice.blocks) != len(got.blocks) {
				t.Fatalf("records read do not encode back: %v", err)
			}
		}
	})
}

// A snapshot whose end record counts other records than came is refused:
// a stream cut or spliced is not taken for a whole one.
func TestReadSnapshotChecksItsEnd(t *testing.T) {
	rec := &snapRecords{st: []byte{stateVersion}, values: []snapValue{{"/s/a/1", 0, []byte("x")}, {"/s/a/2", 0, []byte("y")}}, blocks: []string{"/B1"}}
	b := rec.encode(t)
	var got snapRecords
	if err := readSnapshot(bufio.NewReader(bytes.NewReader(b)), &got); err != nil || len(got.values) != 2 || len(got.blocks) != 1 {
		t.Fatalf("whole snapshot: %v, %d values, %d blocks", err, len(got.values), len(got.blocks))
	}
	// The same end after one value only.
	short := &snapRecords{st: rec.st, values: rec.values[:1], blocks: rec.blocks}
	sb := short.encode(t)
	spliced := append(bytes.Clone(sb[:len(sb)-3]), b[len(b)-3:]...) // the whole one's end: 2 values, 1 block
	if err := readSnapshot(bufio.NewReader(bytes.NewReader(spliced)), &snapRecords{}); !errors.Is(err, errSnapshot) {
		t.Fatalf("spliced snapshot: %v, want errSnapshot", err)
	}
	for cut := 1; cut < len(b); cut++ {
		if err := readSnapshot(bufio.NewReader(bytes.NewReader(b[:cut])), &snapRecords{}); err == nil {
			t.Fatalf("a snapshot cut at %d of %d bytes was taken", cut, len(b))
		}
	}
}

// FuzzDecodeCheckpoint: a corrupt checkpoint fails with an error, never a
// panic; what decodes encodes to something that decodes the same.
func FuzzDecodeCheckpoint(f *testing.F) {
	b, err := encodeCheckpoint(reopenState{core: causal.State{Bloom: []uint64{1}}, tops: map[string]uint64{"A": 1}, seen: []uint64{0, 2},
		fresh: []causal.Ref{{Origin: "A", Seq: 3}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := decodeCheckpoint(in)
		if err != nil {
			return
		}
		out, err := encodeCheckpoint(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeCheckpoint(out)
		if err != nil {
			t.Fatalf("re-encoded checkpoint does not decode: %v", err)
		}
		if out2, _ := encodeCheckpoint(again); !bytes.Equal(out, out2) || !again.checkpoint || len(again.fresh) != len(st.fresh) {
			t.Fatal("encoding is not stable")
		}
	})
}
