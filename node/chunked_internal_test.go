package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
)

// batchWatch records the bytes of each committed batch and fails the
// commit numbered failAt (from 1; 0: none).
type batchWatch struct {
	ds.Batching
	sizes  []int
	failAt int
}

func (w *batchWatch) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := w.Batching.Batch(ctx)
	return &watchedBatch{Batch: b, w: w}, err
}

type watchedBatch struct {
	ds.Batch
	w *batchWatch
	n int
}

func (b *watchedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	b.n += len(k.String()) + len(v)
	return b.Batch.Put(ctx, k, v)
}

func (b *watchedBatch) Commit(ctx context.Context) error {
	b.w.sizes = append(b.w.sizes, b.n)
	if len(b.w.sizes) == b.w.failAt {
		return errors.New("commit failed")
	}
	return b.Batch.Commit(ctx)
}

func chunkedRecord(n int, fill byte) []byte {
	return bytes.Repeat([]byte{fill}, n)
}

// keysUnder lists the keys under key (its chunks, in any slot).
func keysUnder(t *testing.T, store ds.Datastore, key ds.Key) []string {
	t.Helper()
	rs, err := store.Query(context.Background(), query.Query{Prefix: key.String(), KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	es, err := rs.Rest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

// A record of megabytes is written in batches of at most chunkBatch
// chunks (pebble appends a batch of half its memtable or more whole to
// the log it is filling, and keeps its logs at the largest size they
// reached), reads back whole, and leaves the chunks of one record only,
// whatever the lengths written before it.
func TestChunkedRecordsInSmallBatches(t *testing.T) {
	ctx := context.Background()
	w := &batchWatch{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	n := &Node{store: w}
	key := ds.NewKey("/signalmesh/m/checkpoint")
	for i, size := range []int{4 << 20, 5<<20 + 17, 1 << 20, 0, 3*chunkSize - 1} {
		want := chunkedRecord(size, byte('a'+i))
		if err := n.putChunked(ctx, key, want); err != nil {
			t.Fatal(err)
		}
		got, err := n.getChunked(ctx, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("record %d (%d bytes): read %d bytes, %v", i, size, len(got), err)
		}
		if keys := keysUnder(t, w, key); len(keys) != (size+chunkSize-1)/chunkSize {
			t.Fatalf("record %d: %d chunks, want %d: %v", i, len(keys), (size+chunkSize-1)/chunkSize, keys)
		}
	}
	for _, s := range w.sizes {
		if s > chunkBatch*(chunkSize+64) {
			t.Fatalf("a batch of %d bytes (at most %d chunks a batch)", s, chunkBatch)
		}
	}
}

// A write that fails after some of its batches leaves the last record
// whole, and the next write leaves no chunk of the failed one behind.
func TestChunkedRecordSurvivesAFailedWrite(t *testing.T) {
	ctx := context.Background()
	w := &batchWatch{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	n := &Node{store: w}
	key := ds.NewKey("/signalmesh/m/gone")
	first := chunkedRecord(2<<20, 'x')
	if err := n.putChunked(ctx, key, first); err != nil {
		t.Fatal(err)
	}
	w.failAt = len(w.sizes) + 3 // the new record's third batch
	if err := n.putChunked(ctx, key, chunkedRecord(4<<20, 'y')); err == nil {
		t.Fatal("the failed write reported success")
	}
	if got, err := n.getChunked(ctx, key); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("after a failed write: read %d bytes, %v; want the first record", len(got), err)
	}
	w.failAt = 0
	for i, size := range []int{1 << 20, 3 << 20} { // the second write goes to the failed write's slot
		want := chunkedRecord(size, byte('0'+i))
		if err := n.putChunked(ctx, key, want); err != nil {
			t.Fatal(err)
		}
		if got, err := n.getChunked(ctx, key); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("write %d: read %d bytes, %v", i, len(got), err)
		}
		if keys := keysUnder(t, w, key); len(keys) != size/chunkSize {
			t.Fatalf("write %d: %d chunks under the key, want %d", i, len(keys), size/chunkSize)
		}
	}
}

// A record of the first layout (a header of total and count, the chunks
// right under the key) reads, and the next write replaces its chunks.
func TestChunkedRecordFirstLayout(t *testing.T) {
	ctx := context.Background()
	store := dssync.MutexWrap(ds.NewMapDatastore())
	n := &Node{store: store}
	key := ds.NewKey("/signalmesh/m/checkpoint")
	want := chunkedRecord(2*chunkSize+5, 'z')
	for i := 0; i < 3; i++ {
		c := want[i*chunkSize : min(len(want), (i+1)*chunkSize)]
		if err := store.Put(ctx, chunkKey(key, 0, i), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Put(ctx, key, binary.AppendUvarint(binary.AppendUvarint(nil, uint64(len(want))), 3)); err != nil {
		t.Fatal(err)
	}
	if got, err := n.getChunked(ctx, key); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first layout: read %d bytes, %v", len(got), err)
	}
	next := chunkedRecord(chunkSize, 'n')
	if err := n.putChunked(ctx, key, next); err != nil {
		t.Fatal(err)
	}
	if got, err := n.getChunked(ctx, key); err != nil || !bytes.Equal(got, next) {
		t.Fatalf("after a write: read %d bytes, %v", len(got), err)
	}
	keys := keysUnder(t, store, key)
	if len(keys) != 1 || !strings.HasPrefix(keys[0], key.String()+"/a/") {
		t.Fatalf("chunks under the key: %v, want the new record's one", keys)
	}
}
