package main

import (
	"bytes"
	"testing"

	"github.com/signalmesh/signalmesh/chaos"
)

// -parts names the hostile node; the default parts have it.
func TestSetPartsHostile(t *testing.T) {
	var spec chaos.Spec
	if err := setParts(&spec, "hostile", -1); err != nil {
		t.Fatal(err)
	}
	if want := (chaos.Parts{Hostile: true}); spec.Parts != want {
		t.Fatalf("parts %+v", spec.Parts)
	}
	if err := setParts(&spec, "", -1); err != nil || !spec.Parts.Hostile {
		t.Fatalf("default parts %+v (%v)", spec.Parts, err)
	}
}

// `signalmesh hostile` wants a mesh, bootstrap peers and victims.
func TestHostileCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"hostile"},
		{"hostile", "-mesh", "m", "-bootstrap", "not-an-addr", "-victims", "x"},
		{"hostile", "-mesh", "m", "-bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "-victims", "not-a-peer"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
