package crdt

import (
	"fmt"
	"reflect"
	"testing"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"google.golang.org/protobuf/proto"
)

// block builds a delta block as go-ds-crdt's makeNode does.
func block(t testing.TB, d *pb.Delta, links ...ipld.Node) *dag.ProtoNode {
	t.Helper()
	data, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	nd := dag.NodeWithData(data)
	for _, l := range links {
		if err := nd.AddRawLink("", &ipld.Link{Cid: l.Cid()}); err != nil {
			t.Fatal(err)
		}
	}
	nd.SetCidBuilder(dag.V1CidPrefix())
	return nd
}

// A block's recipe, sent and read back, builds the same block from the
// same values; keys that are not runs of hexadecimal sequences, and
// tombstones, have no recipe.
func TestRecipeBuildsTheSameBlock(t *testing.T) {
	values := map[string][]byte{}
	d := &pb.Delta{Priority: 42}
	add := func(prefix string, from, n uint64) {
		for i := from; i < from+n; i++ {
			k := string(appendHexKey(nil, prefix, i))
			values[k] = []byte(fmt.Sprint("v", k))
			d.Elements = append(d.Elements, &pb.Element{Key: k, Value: values[k]})
		}
	}
	add("/s/aaaa/", 7, 100)
	add("/s/bbbb/", 1, 3)
	add("/s/aaaa/", 200, 1)
	child1, child2 := block(t, &pb.Delta{Priority: 1}), block(t, &pb.Delta{Priority: 2})
	nd := block(t, d, child1, child2)

	r, err := recipeOf(nd)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.runs) != 3 || r.keys() != 104 {
		t.Fatalf("runs %+v", r.runs)
	}
	got, err := recipesIn(appendHead(nil, r.c, r.encode()))
	if err != nil || len(got) != 1 {
		t.Fatalf("read back: %v, %d recipes", err, len(got))
	}
	built, ok, err := got[nd.Cid()].build(func(k string) []byte { return values[k] })
	if err != nil || !ok || !built.Cid().Equals(nd.Cid()) {
		t.Fatalf("built %v (ok %v, err %v), want %v", built.Cid(), ok, err, nd.Cid())
	}

	for _, bad := range []*pb.Delta{
		{Elements: []*pb.Element{{Key: "/k/not-hex", Value: []byte("x")}}},
		{Elements: []*pb.Element{{Key: "/k/000000000000000A", Value: []byte("x")}}}, // upper case
		{Elements: []*pb.Element{{Key: "/k/0000000000000001", Value: []byte("x")}}, Tombstones: []*pb.Element{{Key: "/k/0000000000000002"}}},
		{Elements: []*pb.Element{{Key: "/k/0000000000000001", Id: "x", Value: []byte("x")}}},
		{},
	} {
		if _, err := recipeOf(block(t, bad)); err == nil {
			t.Errorf("recipe of %v", bad)
		}
	}
}

// Whatever an announcement carries, reading its recipes neither panics
// nor reads a recipe that would not be written back the same.
func FuzzRecipes(f *testing.F) {
	d := &pb.Delta{Priority: 3, Elements: []*pb.Element{{Key: "/s/x/0000000000000001", Value: []byte("a")}}}
	nd := block(f, d, block(f, &pb.Delta{}))
	r, err := recipeOf(nd)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: nd.Cid().Bytes()}}})
	f.Add(appendHead(nil, nd.Cid(), r.encode()))
	f.Add(b)
	f.Add([]byte{headsField<<3 | 2, 4, recipeField<<3 | 2, 2, 10, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, _ := recipesIn(data)
		for c, r := range rs {
			if !r.c.Equals(c) || r.keys() <= 0 {
				t.Fatalf("recipe %v under %v with %d keys", r.c, c, r.keys())
			}
			again, err := recipesIn(appendHead(nil, r.c, r.encode()))
			if err != nil || !reflect.DeepEqual(again[c], r) {
				t.Fatalf("written back: %+v, %v; read %+v", again[c], err, r)
			}
		}
	})
}
