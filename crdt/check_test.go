package crdt

import (
	"context"
	"errors"
	"testing"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

var errEntry = errors.New("bad entry")

func testChecker(t testing.TB) *checker {
	cur := ds.NewMapDatastore()
	if err := cur.Put(context.Background(), ds.RawKey("/s/a/1"), []byte("one")); err != nil {
		t.Fatal(err)
	}
	c := newChecker(Params{Namespace: ds.NewKey("/ns"), Immutable: true, CheckEntry: func(key string, value []byte) error {
		if string(value) == "bad" {
			return errEntry
		}
		return nil
	}}, cur)
	c.start(cur)
	return c
}

func deltaBytes(t testing.TB, d *pb.Delta) []byte {
	b, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVetDelta(t *testing.T) {
	c := testChecker(t)
	ctx := context.Background()
	el := func(k, v string) *pb.Element { return &pb.Element{Key: k, Id: "x", Value: []byte(v)} }
	for _, tc := range []struct {
		name string
		d    *pb.Delta
		want error
	}{
		{"new entry", &pb.Delta{Elements: []*pb.Element{el("/s/a/2", "two")}, Priority: 3}, nil},
		{"same value again", &pb.Delta{Elements: []*pb.Element{el("/s/a/1", "one")}}, nil},
		{"overwrite", &pb.Delta{Elements: []*pb.Element{el("/s/a/1", "uno")}}, ErrOverwrite},
		{"two values in one delta", &pb.Delta{Elements: []*pb.Element{el("/s/a/3", "x"), el("/s/a/3", "y")}}, ErrOverwrite},
		{"tombstone", &pb.Delta{Tombstones: []*pb.Element{el("/s/a/1", "")}}, ErrTombstone},
		{"bad entry", &pb.Delta{Elements: []*pb.Element{el("/s/a/4", "bad")}}, errEntry},
	} {
		err := c.vetDelta(ctx, deltaBytes(t, tc.d))
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := c.vetDelta(ctx, []byte{0xff, 0xff}); !errors.Is(err, ErrNotDelta) {
		t.Errorf("garbage: %v", err)
	}
}

// FuzzVetDelta: a block's data from another replica never panics the
// checker, and a delta with a tombstone is never accepted.
func FuzzVetDelta(f *testing.F) {
	f.Add(deltaBytes(f, &pb.Delta{Elements: []*pb.Element{{Key: "/s/a/2", Value: []byte("v")}}, Priority: 1}))
	f.Add(deltaBytes(f, &pb.Delta{Tombstones: []*pb.Element{{Key: "/s/a/1", Id: "b"}}}))
	f.Add([]byte{})
	c := testChecker(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		err := c.vetDelta(context.Background(), data)
		var d pb.Delta
		if err == nil && proto.Unmarshal(data, &d) == nil && len(d.Tombstones) > 0 {
			t.Fatalf("accepted a tombstone: %x", data)
		}
	})
}
