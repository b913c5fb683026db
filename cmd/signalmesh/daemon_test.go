package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test start this binary as the signalmesh command.
func TestMain(m *testing.M) {
	if os.Getenv("SIGNALMESH_TEST_RUN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// daemon starts `signalmesh node args...` as a process and returns it with
// its HTTP API's URL.
func daemon(t *testing.T, args ...string) (*exec.Cmd, string, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"node"}, args...)...)
	cmd.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("the daemon's stderr:\n%s", stderr.String())
		}
	})
	sc := bufio.NewScanner(out)
	var stdout bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		stdout.WriteString(line + "\n")
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "http:   "); ok {
			go func() { // keep draining, for the shutdown lines
				for sc.Scan() {
					stdout.WriteString(sc.Text() + "\n")
				}
			}()
			return cmd, u, &stdout
		}
	}
	t.Fatalf("the daemon did not start:\n%s\n%s", stdout.String(), stderr.String())
	return nil, "", nil
}

// The daemon serves publish, tail and status; the CLI talks to it; it shuts
// down cleanly on SIGTERM.
func TestDaemonAndClients(t *testing.T) {
	dir := t.TempDir()
	cmd, url, stdout := daemon(t, "-mesh", "cli-test", "-data-dir", dir, "-listen", "/ip4/127.0.0.1/tcp/0",
		"-http", "127.0.0.1:0", "-ingress-tokens", "tok")

	var out, errb bytes.Buffer
	if code := run([]string{"status", "-node", url}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"node"`) {
		t.Fatalf("status: %d %s %s", code, out.String(), errb.String())
	}

	tailOut := make(chan string, 1)
	pr, pw := io.Pipe()
	go func() {
		var b bytes.Buffer
		code := run([]string{"tail", "-node", url, "-n", "2", "order.**"}, io.MultiWriter(&b, pw), io.Discard)
		pw.Close()
		tailOut <- fmt.Sprintf("%d\n%s", code, b.String())
	}()
	// Publish until the tail is surely subscribed: its first line arrives.
	var ids []string
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		first <- line
		_, _ = io.Copy(io.Discard, pr)
	}()
	publish := func(typ string) string {
		var o, e bytes.Buffer
		if code := run([]string{"publish", "-node", url, "-type", typ, "-subject", "o-1", "-data", `{"total":42}`}, &o, &e); code != 0 {
			t.Fatalf("publish: %d %s", code, e.String())
		}
		return strings.TrimSpace(o.String())
	}
	deadline := time.After(20 * time.Second)
wait:
	for {
		ids = append(ids, publish("order.eu.created"))
		select {
		case <-first:
			break wait
		case <-deadline:
			t.Fatal("tail printed nothing")
		case <-time.After(50 * time.Millisecond):
		}
	}
	ids = append(ids, publish("order.eu.paid"))
	res := <-tailOut
	code, lines, _ := strings.Cut(res, "\n")
	if code != "0" {
		t.Fatalf("tail exit %s: %s", code, lines)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		var ev struct{ ID, Type string }
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("tail line %q: %v", l, err)
		}
		got = append(got, ev.ID)
	}
	if len(got) != 2 {
		t.Fatalf("tail printed %v", got)
	}
	for _, id := range got {
		found := false
		for _, p := range ids {
			found = found || p == id
		}
		if !found {
			t.Errorf("tail printed %s, which was not published (%v)", id, ids)
		}
	}

	// The bridge ingress is served, with its own authentication.
	ev := []byte(`{"specversion":"1.0","id":"from-afar-1","source":"/far","type":"order.far.created"}`)
	for tok, want := range map[string]int{"": 401, "tok": 202} {
		req, _ := http.NewRequest("POST", url+"/v1/ingest", bytes.NewReader(ev))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("ingest with token %q: %d, want %d", tok, resp.StatusCode, want)
		}
	}

	// Failed publishes: 409 for a conflict, 504 for a quorum not reached
	// (nothing the client must change: a retry is safe), 400 for bad input.
	post := func(query, body string) int {
		resp, err := http.Post(url+"/v1/publish"+query, "application/cloudevents+json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		query, body string
		want        int
	}{
		{"", `{"specversion":"1.0","id":"dup-1","source":"/s","type":"a.b","data":1}`, 202},
		{"", `{"specversion":"1.0","id":"dup-1","source":"/s","type":"a.b","data":2}`, 409},
		{"?consistency=quorum:1&timeout=200ms", `{"specversion":"1.0","id":"q-1","source":"/s","type":"a.b"}`, 504},
		{"", `{"specversion":"1.0","id":"","source":"/s","type":"a.b"}`, 400},
	} {
		if got := post(c.query, c.body); got != c.want {
			t.Errorf("publish %s %s: %d, want %d", c.query, c.body, got, c.want)
		}
	}

	// A publish under way when the daemon is told to stop is answered
	// (here its quorum's timeout: 504), not cut off with 499 as if its
	// client had left.
	published := func() int64 {
		var st struct{ Node struct{ Published int64 } }
		resp, err := http.Get(url + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st.Node.Published
	}
	before := published()
	type answer struct {
		status int
		body   string
	}
	inFlight := make(chan answer, 1)
	go func() {
		resp, err := http.Post(url+"/v1/publish?consistency=quorum:1&timeout=2s", "application/cloudevents+json",
			strings.NewReader(`{"specversion":"1.0","id":"at-stop-1","source":"/s","type":"a.b"}`))
		if err != nil {
			inFlight <- answer{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inFlight <- answer{resp.StatusCode, string(b)}
	}()
	awaitWithin(t, 10*time.Second, "the publish committed, waiting for its quorum", func() bool { return published() > before })
	// A tail stream open at SIGTERM ends with the daemon (else Shutdown
	// would wait it out and the daemon exit with an error).
	stream, err := http.Get(url + "/v1/tail?pattern=**")
	if err != nil {
		t.Fatal(err)
	}
	streamEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream.Body)
		stream.Body.Close()
		streamEnded <- err
	}()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := <-inFlight; got.status != http.StatusGatewayTimeout || !strings.Contains(got.body, "deadline exceeded") {
		t.Errorf("a quorum publish under way at SIGTERM answered %d %s, want 504 for its timeout", got.status, got.body)
	}
	if err := <-streamEnded; err != nil {
		t.Errorf("the tail stream open at SIGTERM: %v, want its end", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, stdout.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}
	if !strings.Contains(stdout.String(), "signalmesh node: stopped") {
		t.Errorf("no clean stop reported:\n%s", stdout.String())
	}

	// Now nothing listens: the clients say so and exit 1.
	for _, args := range [][]string{{"status", "-node", url}, {"publish", "-node", url, "-type", "a.b"}, {"tail", "-node", url}} {
		var o, e bytes.Buffer
		if code := run(args, &o, &e); code != 1 || !strings.Contains(e.String(), "unreachable") {
			t.Errorf("%v: exit %d, %q", args, code, e.String())
		}
	}
}

// Flags override environment variables, which override the config file.
func TestDaemonConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "node.json")
	_ = os.WriteFile(file, []byte(`{"mesh":"from-file","http":"127.0.0.1:1","data_dir":"/file",
		"params":{"journal_delay":"20ms","gossip_degree":3},
		"retention":[{"pattern":"sensor.**","max_age":"1h"},{"pattern":"**","max_count":10,"max_bytes":4096}],
		"bridge":{"cluster":"eu","tokens":["a"],"routes":[{"pattern":"payment.**","consistency":"quorum:1"}],
		"destinations":[{"name":"us","url":"http://127.0.0.1:9/v1/ingest","mode":"batch","batch_size":7,"patterns":["order.**"],"cluster":"us","backoff":"1s"}]}}`), 0o644)
	t.Setenv("SIGNALMESH_HTTP", "127.0.0.1:2")
	t.Setenv("SIGNALMESH_DATA_DIR", "/env")
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	c, err := loadDaemonConfig(fs, []string{"-config", file, "-data-dir", "/flag"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mesh != "from-file" || c.HTTP != "127.0.0.1:2" || c.DataDir != "/flag" || c.Bridge.Cluster != "eu" ||
		time.Duration(c.Params.JournalDelay) != 20*time.Millisecond || len(c.Bridge.Destinations) != 1 ||
		time.Duration(c.Bridge.Destinations[0].Backoff) != time.Second {
		t.Fatalf("config %+v", c)
	}
	nc, err := c.nodeConfig()
	if err != nil || nc.Params.JournalDelay != 20*time.Millisecond || nc.Params.GossipDegree != 3 || len(nc.Retention) != 2 ||
		nc.Retention[0].MaxAge != time.Hour || nc.Retention[1].MaxCount != 10 || nc.Retention[1].MaxBytes != 4096 {
		t.Fatalf("node config %+v %v", nc, err)
	}
	c.Retention = append(c.Retention, retentionRule{Pattern: "x.**"}) // no limit
	if _, err := c.nodeConfig(); err == nil {
		t.Error("a retention rule without a limit was accepted")
	}
	c.Retention = nil
	if ds, err := c.destinations(); err != nil || len(ds) != 1 || ds[0].Mode != "batch" || ds[0].BatchSize != 7 {
		t.Fatalf("destinations %+v %v", ds, err)
	}
	// The fault harness's limits and slow handler, as flags.
	c, err = loadDaemonConfig(flag.NewFlagSet("node", flag.ContinueOnError),
		[]string{"-config", file, "-causal-buffer", "16", "-subscriber-queue", "4", "-record-delay", "300us-200ms"})
	if err != nil || c.RecordDelay != "300us-200ms" {
		t.Fatalf("%+v %v", c, err)
	}
	if nc, err := c.nodeConfig(); err != nil || nc.Params.CausalBuffer != 16 || nc.Params.SubscriberQueue != 4 {
		t.Fatalf("node config %+v %v", nc.Params, err)
	}
	if _, err := loadDaemonConfig(flag.NewFlagSet("node", flag.ContinueOnError), []string{"-config", file, "stray"}); err == nil {
		t.Error("a stray argument was accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"mesh":"m","nope":1}`), 0o644)
	if _, err := loadDaemonConfig(flag.NewFlagSet("node", flag.ContinueOnError), []string{"-config", bad}); err == nil {
		t.Error("an unknown config field was accepted")
	}
}

// Every command's help exits 0 and names its flags; bad daemon settings
// exit 2 with a message.
func TestHelpAndBadDaemonFlags(t *testing.T) {
	for cmd, want := range map[string]string{"node": "-api-token", "publish": "-count", "tail": "-reconnect", "status": "-node",
		"replay": "-after", "digest": "-node", "demo": "-signals", "tour": "-seed", "bench": "-processes"} {
		var out, errb bytes.Buffer
		if code := run([]string{cmd, "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), want) {
			t.Errorf("%s -h: %d, %q", cmd, code, errb.String())
		}
	}
	for _, args := range [][]string{
		{"node"}, // no mesh
		{"node", "-mesh", "bad mesh"},
		{"node", "-mesh", "m", "-psk", "zz"},
		{"node", "-mesh", "m", "-bootstrap", "/ip4/127.0.0.1/tcp/1"},
		{"node", "-mesh", "m", "-log-level", "loud"},
		{"node", "-mesh", "m", "-causal-buffer", "many"},
		{"publish", "-type", "a.b", "-data", "{"},
		{"publish"},
		{"publish", "-type", "a.b", "-consistency", "strong"},
		{"publish", "a.b", "1", "extra"},
		{"publish", "a.b", "-type", "a.c"},
		{"publish", "a.b", "--count", "0"},
		{"publish", "-file", "-", "-count", "2"},
		{"publish", "a..b"},
		{"node", "-mesh", "m", "-http", "0.0.0.0:7070"},
		{"node", "-mesh", "m", "-insecure-http", "maybe"},
		{"tail", "a.*", "b.*"},
		{"replay", "-since", "yesterday"},
		{"digest", "extra"},
		{"version", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, %q; want 2 and a message", args, code, errb.String())
		}
	}
}
