package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/chaos"
)

// ciParts are the workload parts of the CI run: all but the ephemeral nodes
// and retries on another node. With ephemeral nodes killed, causes are
// lost for good and the short run's CauseWait (10 s) can also give up a
// cause a fault delayed (one -race run of five failed so); with retries an
// effect can wait out CauseWait for a cause's first copy. Both are open;
// "chaos -parts ephemeral,retry" shows them.
const ciParts = "out-of-band,slow-subscriber,limits,reuse,partial-mesh,group,hostile,retention"

// The CI run of the fault harness: three seeded schedules against node
// processes (this test binary standing in for signalmesh), dealt every
// fault kind between them, with the workload parts of ciParts: every
// schedule must PASS, and nothing is left behind.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes for a few minutes")
	}
	// A failed schedule's evidence is kept, here in the test's directory.
	results, stdout := runChaos(t, 3, "-short", "-cover", "-seed", "1", "-parts", ciParts)
	assertCoverage(t, results)
	if !strings.Contains(stdout, "3 schedules") {
		t.Fatalf("no summary:\n%s", stdout)
	}
	assertNothingLeft(t, os.Getpid())
}

// runChaos runs the chaos command with args (and -out and -dir in the
// test's directories), expects want schedules, and fails the test on an
// error, an empty schedule or an anomaly. It returns the results and the
// report.
func runChaos(t *testing.T, want int, args ...string) ([]chaos.Result, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "chaos.json")
	var stdout, stderr bytes.Buffer
	t.Setenv("SIGNALMESH_TEST_RUN", "1") // the nodes are this binary
	start := time.Now()
	code := run(append(append([]string{"chaos"}, args...), "-out", out, "-dir", t.TempDir()), &stdout, &stderr)
	t.Logf("%s\n(%v)", stdout.String(), time.Since(start).Round(time.Second))
	if code > 1 || strings.Contains(stderr.String(), "signalmesh chaos:") { // 1: a schedule failed; the anomalies are checked below
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var results []chaos.Result
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatal(err)
	}
	if len(results) != want {
		t.Fatalf("%d schedules, want %d", len(results), want)
	}
	for _, r := range results {
		v := r.Verdict
		if v.Journaled == 0 || v.Published == 0 {
			t.Fatalf("seed %d: nothing published or journaled: %+v", r.Seed, v)
		}
		for _, a := range v.Anomalies {
			t.Errorf("seed %d: %s", r.Seed, a)
		}
	}
	return results, stdout.String()
}

// assertCoverage checks that the run exercised every fault kind the
// network allows and every workload part.
func assertCoverage(t *testing.T, results []chaos.Result) {
	t.Helper()
	kinds := map[chaos.Kind]bool{}
	parts := map[string]int{}
	setup := map[string]bool{}
	netns := false
	for _, r := range results {
		for _, f := range r.Faults {
			kinds[f.Kind] = true
		}
		for p, n := range r.Verdict.Parts {
			parts[p] += n
		}
		netns = netns || strings.HasPrefix(r.Network, "network namespaces")
		setup["slow handler"] = setup["slow handler"] || r.Setup.RecordDelay != ""
		setup["small queue"] = setup["small queue"] || r.Setup.SubscriberQueue > 0
		setup["small causal buffer"] = setup["small causal buffer"] || r.Setup.CausalBuffer > 0
		setup["chain bootstrap"] = setup["chain bootstrap"] || r.Setup.Chain
		setup["consumer group"] = setup["consumer group"] || r.Verdict.Group != nil && r.Verdict.Group.Handled > 0
		for _, p := range r.Verdict.Pruned {
			setup["pruned block"] = setup["pruned block"] || p["blocks"] > 0
		}
	}
	for _, k := range chaos.AllKinds {
		if !kinds[k] && (k != chaos.Slow || netns) {
			t.Errorf("fault kind %s never ran", k)
		}
	}
	for _, p := range []string{"out_of_band", "reuse", "probe", "effect"} {
		if parts[p] == 0 {
			t.Errorf("workload part %s never ran (%v)", p, parts)
		}
	}
	for s, ok := range setup {
		if !ok {
			t.Errorf("no schedule with a %s", s)
		}
	}
}

// Interrupted in the middle of a schedule, the harness removes its
// processes, namespaces, links and directories.
func TestChaosInterruptCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "chaos", "-schedules", "1", "-nodes", "3", "-duration", "30s")
	cmd.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	errs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(errs)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "node 2 started") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the harness did not stop on SIGINT:\n%s", strings.Join(seen, "\n"))
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// assertNothingLeft checks that no namespace, link, temporary directory or
// node process of the harness running as pid is left.
func assertNothingLeft(t *testing.T, pid int) {
	t.Helper()
	prefix := fmt.Sprintf("smc%d", pid)
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left:\n%s", out)
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil && strings.Contains(string(out), prefix) {
		t.Errorf("links left:\n%s", out)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("signalmesh-chaos-%d-*", pid)))
	if len(dirs) > 0 {
		t.Errorf("directories left: %v", dirs)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(fmt.Sprintf("signalmesh-chaos-%d-", pid))) {
			t.Errorf("a node process is left: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// The daemon's fault API cuts a node off from a peer and heals it (the
// redialer reconnects), /v1/digest reports the journal, and a publish
// timeout is validated.
func TestDaemonFaultAPI(t *testing.T) {
	mesh := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	_, urlA, outA := daemon(t, "-mesh", mesh, "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0", "-fault-api", "-data-dir", t.TempDir())
	var p2pA, idA string
	for _, l := range strings.Split(outA.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "libp2p: "); ok {
			p2pA = strings.Fields(rest)[0]
		}
		if rest, ok := strings.CutPrefix(l, "signalmesh node "); ok {
			idA, _, _ = strings.Cut(rest, ":")
		}
	}
	_, urlB, _ := daemon(t, "-mesh", mesh, "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0", "-fault-api", "-data-dir", t.TempDir(), // quorum acks come from disk
		"-bootstrap", p2pA, "-config", writeConfig(t, `{"params": {"redial": "100ms"}}`))
	peers := func(url string) int {
		var st struct{ Peers []string }
		getJSON(t, url+"/v1/status", &st)
		return len(st.Peers)
	}
	post := func(url, path, body string) int {
		resp, err := http.Post(url+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	awaitCond(t, "b connects to a", func() bool { return peers(urlB) == 1 })
	if code := post(urlB, "/v1/fault/block", `{"peers":["`+idA+`"]}`); code != 200 {
		t.Fatalf("block: %d", code)
	}
	awaitCond(t, "b cut off from a", func() bool { return peers(urlB) == 0 && peers(urlA) == 0 })
	if code := post(urlB, "/v1/fault/block", `{"peers":["not a peer"]}`); code != 400 {
		t.Fatalf("block with a bad id: %d, want 400", code)
	}
	if code := post(urlB, "/v1/fault/heal", `{}`); code != 200 {
		t.Fatalf("heal: %d", code)
	}
	awaitCond(t, "b redials a after the heal", func() bool { return peers(urlB) == 1 })

	ev := `{"specversion":"1.0","id":"d-1","source":"/t","type":"t.x"}`
	req, _ := http.NewRequest("POST", urlA+"/v1/publish?timeout=soon", strings.NewReader(ev))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("publish with a bad timeout: %d, want 400", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", urlA+"/v1/publish?timeout=5s&consistency=quorum:1", strings.NewReader(ev))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != 202 {
		t.Fatalf("quorum publish: %v %v", resp, err)
	}
	resp.Body.Close()
	awaitCond(t, "both journals hold the signal", func() bool {
		var a, b struct {
			Count  int
			Digest string
		}
		getJSON(t, urlA+"/v1/digest", &a)
		getJSON(t, urlB+"/v1/digest", &b)
		return a.Count == 1 && a == b
	})
	// Without -fault-api there is no fault endpoint.
	_, urlC, _ := daemon(t, "-mesh", mesh, "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0")
	if code := post(urlC, "/v1/fault/heal", `{}`); code != 404 && code != 405 {
		t.Fatalf("fault API without -fault-api: %d", code)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func awaitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The fault harness in the NAT topology: one short schedule of five nodes
// (a public relay; two edges behind one port-preserving NAT, one behind
// another, one behind a symmetric NAT), dealt every fault kind, with the
// workload parts of ciParts: it must PASS, report each of the six pairs
// of edges direct, relayed or not connected, and leave nothing behind.
// Skipped where namespaces or iptables are unavailable (the NAT topology
// has no fallback: package chaos's TestRelayLeaks and TestCutRules cover
// its cut plan there).
func TestChaosNATShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes in network namespaces")
	}
	if raceEnabled {
		// It passes under -race (46 s), but CI runs the suite twice within
		// its 15 minutes: the run without -race covers it, TestChaosShort
		// covers the harness under -race.
		t.Skip("run without -race (CI's second pass)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the NAT topology needs network namespaces (root)")
	}
	for _, c := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("the NAT topology needs the %s command", c)
		}
	}
	results, stdout := runChaos(t, 1, "-topology", "nat", "-short", "-cover", "-nodes", "5", "-schedules", "1", "-seed", "1", "-parts", ciParts)
	r := results[0]
	if !strings.Contains(r.Network, "NAT topology") || r.Spec.Topology != "nat" {
		t.Fatalf("network %q, topology %q", r.Network, r.Spec.Topology)
	}
	l := r.Links
	if l == nil || len(l.Pairs) != 6 || l.Direct+l.Relayed+l.None != 6 {
		t.Fatalf("edge links: %+v, want the six pairs of edges", l)
	}
	if !strings.Contains(stdout, "edge links at the end:") {
		t.Fatalf("no edge links in the report:\n%s", stdout)
	}
	assertNothingLeft(t, os.Getpid())
}
