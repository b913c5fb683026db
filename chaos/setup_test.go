package chaos

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// A result's spec carries everything a replay needs: the same JSON gives
// the same spec (the process fields aside), and the same seed the same
// setup and faults.
func TestResultReplaysItsSchedule(t *testing.T) {
	spec := Spec{Nodes: 4, Seed: 7, Schedules: 1, Duration: 15 * time.Second, Rate: 30, Settle: 20 * time.Second,
		Network: "netns", Kinds: []Kind{Kill, OneWay}, Parts: Parts{Ephemeral: 5, OutOfBand: true, Limits: true}}
	r := Result{Seed: 7, Spec: spec, Setup: drawSetup(7, 0, spec.Parts, false), Faults: Plan(7, 4, spec.Duration, spec.Kinds, false)}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Spec, spec) {
		t.Fatalf("spec after JSON:\n%+v\nwant\n%+v", back.Spec, spec)
	}
	if !reflect.DeepEqual(drawSetup(back.Seed, 0, back.Spec.Parts, false), r.Setup) ||
		!reflect.DeepEqual(Plan(back.Seed, back.Spec.Nodes, back.Spec.Duration, back.Spec.Kinds, false), r.Faults) {
		t.Fatal("the seed does not give the same setup and faults again")
	}
}

// Switching a part off leaves the other parts' draws alone.
func TestSetupDrawsIndependentOfParts(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		all := drawSetup(seed, 0, DefaultParts(false), false)
		noSlow := drawSetup(seed, 0, Parts{Limits: true, PartialMesh: true}, false)
		if all.CausalBuffer != noSlow.CausalBuffer || all.Chain != noSlow.Chain || noSlow.RecordDelay != "" || noSlow.SubscriberQueue != 0 {
			t.Fatalf("seed %d: %+v vs %+v", seed, all, noSlow)
		}
	}
	cover := drawSetup(3, 0, DefaultParts(true), true)
	if cover.RecordDelay == "" || cover.SubscriberQueue == 0 || cover.CausalBuffer == 0 || !cover.Chain || cover.Ephemeral != 4 {
		t.Fatalf("cover: %+v", cover)
	}
	if s := drawSetup(3, 0, Parts{Outage: 1000, Ephemeral: 9}, false); s.Ephemeral != 0 || s.Outage != 1000 {
		t.Fatalf("outage: %+v", s)
	}
}
