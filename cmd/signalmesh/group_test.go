package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/node"
)

// Three daemon processes record signals as members of one consumer group
// (-record-group); one is killed with SIGKILL mid-stream. Every signal is
// recorded by a member, none lost; the duplicates (what the dead member
// recorded after its last renewal) are at most the survivors' count of
// signals handled for departed members (Status.TakenOver).
func TestGroupSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	mesh := fmt.Sprintf("group-kill-%d", time.Now().UnixNano())
	common := []string{"-mesh", mesh, "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0", "-lease", "1s",
		"-record-group", "workers", "-record-pattern", "order.**", "-log-level", "error"}
	records := make([]string, 3)
	urls := make([]string, 3)
	var victim interface{ Kill() error }
	var boot string
	for i := range 3 {
		records[i] = filepath.Join(dir, fmt.Sprint("record-", i))
		args := append([]string{"-data-dir", filepath.Join(dir, fmt.Sprint("node-", i)), "-record", records[i]}, common...)
		if boot != "" {
			args = append(args, "-bootstrap", boot)
		}
		cmd, url, out := daemon(t, args...)
		urls[i] = url
		if i == 0 {
			for _, l := range strings.Split(out.String(), "\n") {
				if a, ok := strings.CutPrefix(strings.TrimSpace(l), "libp2p: "); ok {
					boot = strings.Fields(a)[0]
				}
			}
			if boot == "" {
				t.Fatalf("no libp2p address in %q", out.String())
			}
		}
		if i == 2 {
			victim = cmd.Process
		}
	}
	type statusJSON struct {
		Node struct {
			Groups    map[string][]string
			TakenOver int64
		} `json:"node"`
		Subscriptions []node.SubscriptionInfo `json:"subscriptions"`
	}
	statusOf := func(url string) (st statusJSON) {
		resp, err := http.Get(url + "/v1/status")
		if err != nil {
			return st
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st
	}
	status := func(url string) (groups map[string][]string, taken int64) {
		st := statusOf(url)
		return st.Node.Groups, st.Node.TakenOver
	}
	awaitWithin(t, 30*time.Second, "three members on every daemon", func() bool {
		for _, u := range urls {
			if g, _ := status(u); len(g["workers"]) != 3 {
				return false
			}
		}
		return true
	})
	var ids []string
	publish := func(n int) {
		t.Helper()
		var batch []map[string]any
		for range n {
			id := fmt.Sprint("o-", len(ids))
			ids = append(ids, id)
			batch = append(batch, map[string]any{"specversion": "1.0", "id": id, "source": "/shop", "type": "order.created",
				"subject": fmt.Sprint("c-", len(ids)%40)})
		}
		b, _ := json.Marshal(batch)
		resp, err := http.Post(urls[0]+"/v1/publish", "application/cloudevents-batch+json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %s", resp.Status)
		}
	}
	recorded := func() (by map[string][]int) {
		by = map[string][]int{}
		for i, r := range records {
			entries, _ := chaos.ReadRecord(r)
			for _, e := range entries {
				if e.ID != "" {
					by[e.ID] = append(by[e.ID], i)
				}
			}
		}
		return by
	}
	for range 10 {
		publish(100)
	}
	// Every member's progress mark, as the first daemon sees it, covers
	// the first thousand: what the victim recorded of them is not handed
	// over again.
	awaitWithin(t, 30*time.Second, "the members' marks at 1,000 on the first daemon", func() bool {
		n := 0
		for _, s := range statusOf(urls[0]).Subscriptions {
			if s.Group == "workers" && s.Mark.Sum() >= 1000 {
				n++
			}
		}
		return n == 3
	})
	before := 0
	for _, ms := range recorded() {
		for _, m := range ms {
			if m == 2 {
				before++
			}
		}
	}
	for range 5 {
		publish(100)
	}
	awaitWithin(t, 30*time.Second, "the victim records some of the next 500", func() bool {
		n := 0
		for _, ms := range recorded() {
			for _, m := range ms {
				if m == 2 {
					n++
				}
			}
		}
		return n > before
	})
	if err := victim.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	for range 10 {
		publish(100)
	}
	awaitWithin(t, 60*time.Second, "every signal recorded by a member", func() bool { return len(recorded()) == len(ids) })
	failover := time.Since(killed)
	by := recorded()
	dups, per := 0, map[int]int{}
	for _, id := range ids {
		dups += len(by[id]) - 1
		for _, m := range by[id] {
			per[m]++
		}
	}
	_, t0 := status(urls[0])
	_, t1 := status(urls[1])
	t.Logf("%d signals, every one recorded %v after the kill; duplicates %d (counted at most %d; the victim recorded %d, %d before its mark), per member %v",
		len(ids), failover.Round(time.Millisecond), dups, t0+t1, per[2], before, per)
	if int64(dups) > t0+t1 {
		t.Fatalf("%d duplicates, more than the %d the survivors counted", dups, t0+t1)
	}
	if dups > per[2]-before {
		t.Fatalf("%d duplicates, more than the victim recorded after its known mark (%d)", dups, per[2]-before)
	}
}

// awaitWithin polls cond until it holds or the timeout passes.
func awaitWithin(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With -record-group-file the daemon runs two subscriptions: -record a
// plain one (every signal), and a group member of its own recording to
// that file. A lone member handles every signal; both records stamp
// their lines.
func TestGroupRecordFileBesideRecord(t *testing.T) {
	dir := t.TempDir()
	plain, group := filepath.Join(dir, "record"), filepath.Join(dir, "group")
	_, url, _ := daemon(t, "-mesh", fmt.Sprintf("group-file-%d", time.Now().UnixNano()), "-listen", "/ip4/127.0.0.1/tcp/0",
		"-http", "127.0.0.1:0", "-log-level", "error", "-lease", "1s",
		"-record", plain, "-record-group", "g", "-record-strategy", "balanced", "-record-group-file", group)
	var batch []map[string]any
	for i := range 20 {
		batch = append(batch, map[string]any{"specversion": "1.0", "id": fmt.Sprint("x-", i), "source": "/t", "type": "t.x"})
	}
	b, _ := json.Marshal(batch)
	resp, err := http.Post(url+"/v1/publish", "application/cloudevents-batch+json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	handled := func(path string) (n int) {
		entries, _ := chaos.ReadRecord(path)
		for _, e := range entries {
			if e.ID != "" && e.T != 0 {
				n++
			}
		}
		return n
	}
	awaitWithin(t, 30*time.Second, "both records hold the 20 signals", func() bool { return handled(plain) == 20 && handled(group) == 20 })
	resp, err = http.Get(url + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Subscriptions []node.SubscriptionInfo `json:"subscriptions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	groups := map[string]string{}
	for _, s := range st.Subscriptions {
		groups[s.Name] = s.Group + " " + s.Strategy
	}
	if groups["record"] != " " || groups["group.g"] != "g balanced" {
		t.Fatalf("subscriptions by name: %q", groups)
	}
}

// -record-group-file and -record-strategy need -record-group.
func TestRecordGroupFlagsNeedAGroup(t *testing.T) {
	for _, cfg := range []daemonConfig{{RecordGroupFile: "f"}, {RecordStrategy: "balanced"}, {RecordGroup: "g", RecordStrategy: "nope"}} {
		if _, err := recordStrategy(&cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if st, err := recordStrategy(&daemonConfig{RecordGroup: "g", RecordGroupFile: "f"}); err != nil || st != node.Hash {
		t.Errorf("default strategy %v %v", st, err)
	}
}
