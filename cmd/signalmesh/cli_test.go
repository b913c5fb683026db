package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cli runs the command in this process and returns its exit code, stdout
// and stderr.
func cli(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// publish TYPE DATA with --count, replay (all, -after, -since), digest and
// version, against a running daemon.
func TestPublishReplayDigestVersion(t *testing.T) {
	_, url, _ := daemon(t, "-mesh", "cli-replay", "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0")

	code, out, errs := cli("publish", "order.eu.created", `{"total":42}`, "--count", "3", "-node", url)
	ids := strings.Fields(out)
	if code != 0 || len(ids) != 3 || ids[0] == ids[1] {
		t.Fatalf("publish --count 3: %d %q %s", code, out, errs)
	}
	code, out, errs = cli("publish", "-node", url, "note.text", "hello there")
	if code != 0 || len(strings.Fields(out)) != 1 {
		t.Fatalf("publish text: %d %q %s", code, out, errs)
	}
	note := strings.TrimSpace(out)

	awaitCond(t, "the journal to hold 4 signals", func() bool {
		code, out, _ := cli("digest", "-node", url)
		f := strings.Fields(out)
		return code == 0 && len(f) == 2 && f[1] == "4"
	})
	var d struct {
		Count  int
		Digest string
	}
	getJSON(t, url+"/v1/digest", &d)
	if _, out, _ := cli("digest", "-node", url); out != fmt.Sprintf("%s %d\n", d.Digest, d.Count) {
		t.Errorf("digest printed %q; the node says %+v", out, d)
	}

	replay := func(args ...string) []map[string]any {
		t.Helper()
		code, out, errs := cli(append([]string{"replay", "-node", url}, args...)...)
		if code != 0 {
			t.Fatalf("replay %v: %d %s", args, code, errs)
		}
		var evs []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l == "" {
				continue
			}
			var ev map[string]any
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatalf("replay line %q: %v", l, err)
			}
			evs = append(evs, ev)
		}
		return evs
	}
	orders := replay("order.**")
	if len(orders) != 3 {
		t.Fatalf("replay order.**: %v", orders)
	}
	got := map[string]bool{}
	for _, ev := range orders {
		got[ev["id"].(string)] = true
		if ev["data"].(map[string]any)["total"] != 42.0 {
			t.Errorf("data %v", ev["data"])
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("replay lacks %s", id)
		}
	}
	if rest := replay("order.**", "-after", orders[0]["id"].(string)); len(rest) != 2 || rest[0]["id"] != orders[1]["id"] {
		t.Errorf("replay -after: %v", rest)
	}
	if all := replay("-since", "1h"); len(all) != 4 {
		t.Errorf("replay -since 1h: %d signals, want 4", len(all))
	}
	if none := replay("-since", time.Now().Add(time.Hour).Format(time.RFC3339)); len(none) != 0 {
		t.Errorf("replay -since in an hour: %v", none)
	}
	texts := replay("note.*")
	if len(texts) != 1 || texts[0]["id"] != note || texts[0]["data"] != "hello there" {
		t.Errorf("the text signal: %v", texts)
	}
	if code, _, errs := cli("replay", "-node", url, "-after", "no-such-id"); code != 1 || !strings.Contains(errs, "404") {
		t.Errorf("replay -after an unknown id: %d %s", code, errs)
	}
	// In pages: -limit prints the cursor to go on from; the pages make
	// the whole replay. The JSON array of /v1/replay is the same.
	all := replay()
	code, out, errs = cli("replay", "-node", url, "-limit", "3")
	first := strings.Split(strings.TrimSpace(out), "\n")
	_, cursor, found := strings.Cut(strings.TrimSpace(errs), "-cursor ")
	if code != 0 || len(first) != 3 || !found {
		t.Fatalf("replay -limit 3: %d, %d lines, stderr %q", code, len(first), errs)
	}
	rest := replay("-cursor", cursor)
	if len(rest) != 1 || rest[0]["id"] != all[3]["id"] {
		t.Errorf("replay -cursor: %v, want the last of %v", rest, all)
	}
	if _, _, errs := cli("replay", "-node", url, "-limit", "4"); errs != "" {
		t.Errorf("replay -limit 4 of 4 says more follow: %q", errs)
	}
	var arr []map[string]any
	getJSON(t, url+"/v1/replay", &arr)
	if len(arr) != 4 || arr[0]["id"] != all[0]["id"] || arr[3]["id"] != all[3]["id"] {
		t.Errorf("/v1/replay as an array: %v", arr)
	}
	for _, q := range []string{"cursor=nope&format=ndjson", "limit=0&format=ndjson", "limit=2"} {
		if resp, err := http.Get(url + "/v1/replay?" + q); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/v1/replay?%s: %v, want 400", q, resp.Status)
		} else {
			resp.Body.Close()
		}
	}

	// A Last-Event-ID from another run of the daemon: the stream says so.
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/tail", nil)
	req.Header.Set("Last-Event-ID", "0a0b0c.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	var head []string
	for len(head) < 3 && sc.Scan() {
		head = append(head, sc.Text())
	}
	resp.Body.Close()
	if !slices.Contains(head, "event: reset") {
		t.Errorf("no reset event for an unknown Last-Event-ID: %q", head)
	}

	code, out, _ = cli("version")
	if code != 0 || !strings.HasPrefix(out, "signalmesh ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: %d %q", code, out)
	}
}

// The daemon refuses an exposed API without a token, requests for another
// host (DNS rebinding), and /metrics without the token when one is set.
func TestDaemonSafeByDefault(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7070", ":7070", "192.0.2.1:7070", "example.com:7070"} {
		code, _, errs := cli("node", "-mesh", "m", "-http", addr)
		if code != 2 || !strings.Contains(errs, "-api-token") {
			t.Errorf("-http %s without a token: exit %d, %q", addr, code, errs)
		}
	}
	var warn bytes.Buffer
	for addr, exposed := range map[string]bool{"127.0.0.1:1": false, "[::1]:1": false, "localhost:1": false, "0.0.0.0:1": true} {
		if err := checkExposure(&daemonConfig{HTTP: addr, APIToken: "t"}, &warn); err != nil {
			t.Errorf("%s with a token: %v", addr, err)
		}
		err := checkExposure(&daemonConfig{HTTP: addr}, &warn)
		if (err != nil) != exposed {
			t.Errorf("%s without a token: %v", addr, err)
		}
		if err := checkExposure(&daemonConfig{HTTP: addr, InsecureHTTP: true}, &warn); err != nil {
			t.Errorf("%s with -insecure-http: %v", addr, err)
		}
	}
	if strings.Count(warn.String(), "WARNING") != 1 {
		t.Errorf("-insecure-http on an exposed address warns once, on it: %q", warn.String())
	}

	_, base, _ := daemon(t, "-mesh", "cli-safe", "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0",
		"-api-token", "sesame", "-http-hosts", "mesh.internal")
	u, _ := url.Parse(base)
	get := func(path, host, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if host != "" {
			req.Host = host
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		path, host, token string
		want              int
	}{
		{"/v1/status", "", "sesame", 200},
		{"/v1/status", "localhost:" + u.Port(), "sesame", 200},
		{"/v1/status", "mesh.internal:" + u.Port(), "sesame", 200},
		{"/v1/status", "MESH.internal.", "sesame", 200},
		{"/v1/status", "attacker.example:" + u.Port(), "sesame", 421},
		{"/healthz", "attacker.example", "", 421},
		{"/v1/status", "", "", 401},
		{"/v1/status", "", "wrong", 401},
		{"/metrics", "", "", 401},
		{"/metrics", "attacker.example", "sesame", 421},
		{"/healthz", "", "", 200},
		{"/readyz", "", "", 503}, // a node alone
	} {
		if got, body := get(c.path, c.host, c.token); got != c.want {
			t.Errorf("GET %s Host %q token %q: %d %s, want %d", c.path, c.host, c.token, got, body, c.want)
		}
	}
	if code, body := get("/metrics", "", "sesame"); code != 200 || !strings.Contains(body, "signalmesh_") {
		t.Errorf("/metrics with the token: %d", code)
	}
	// The CLI sends the token.
	if code, out, errs := cli("status", "-node", base, "-token", "sesame"); code != 0 || !strings.Contains(out, `"node"`) {
		t.Errorf("status with the token: %d %s", code, errs)
	}
}

// tail reconnects after the stream is cut and, with Last-Event-ID, gets
// what the node delivered while it was away: nothing lost, nothing twice.
func TestTailResumesAfterCut(t *testing.T) {
	_, base, _ := daemon(t, "-mesh", "cli-resume", "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0")
	target, _ := url.Parse(base)
	// A proxy between tail and the node that can cut the stream and refuse
	// connections, and records the Last-Event-ID of each request.
	var down atomic.Bool
	var mu sync.Mutex
	var lastIDs []string
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	exe, _ := os.Executable()
	tail := exec.Command(exe, "tail", "-node", proxy.URL, "order.**")
	tail.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	var tailErr lockedBuffer
	tail.Stderr = &tailErr
	stdout, _ := tail.StdoutPipe()
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	var printed sync.Map // id -> times
	var lines atomic.Int64
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev struct{ ID string }
			_ = json.Unmarshal(sc.Bytes(), &ev)
			n, _ := printed.LoadOrStore(ev.ID, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			lines.Add(1)
		}
	}()
	defer func() {
		_ = tail.Process.Kill()
		<-read
		_ = tail.Wait()
		if t.Failed() {
			t.Logf("tail's stderr:\n%s", tailErr.String())
		}
	}()
	publish := func(typ string) string {
		t.Helper()
		code, out, errs := cli("publish", "-node", base, typ)
		if code != 0 {
			t.Fatalf("publish: %s", errs)
		}
		return strings.TrimSpace(out)
	}
	// Publish until tail prints: then its stream is subscribed.
	awaitCond(t, "tail's first line", func() bool { publish("order.before"); return lines.Load() > 0 })
	last := publish("order.before")
	awaitCond(t, "tail to print the last signal before the cut", func() bool { _, ok := printed.Load(last); return ok })

	delivered := func() int64 {
		var st struct{ Node struct{ Delivered int64 } }
		getJSON(t, base+"/v1/status", &st)
		return st.Node.Delivered
	}
	before := delivered() // the node delivers in order: everything up to last

	down.Store(true)
	proxy.CloseClientConnections()
	var during []string
	for range 3 {
		during = append(during, publish("order.during"))
	}
	// The node has delivered them before tail can reconnect: only
	// Last-Event-ID can bring them.
	awaitCond(t, "the node to deliver the signals published during the cut", func() bool { return delivered() >= before+3 })
	down.Store(false)
	for _, id := range during {
		awaitCond(t, "tail to print "+id+" after reconnecting", func() bool { _, ok := printed.Load(id); return ok })
	}
	printed.Range(func(id, n any) bool {
		if k := n.(*atomic.Int64).Load(); k != 1 {
			t.Errorf("%s printed %d times", id, k)
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if len(lastIDs) < 2 || lastIDs[0] != "" || lastIDs[len(lastIDs)-1] == "" {
		t.Errorf("Last-Event-ID of the requests: %q; want none on the first, one on the reconnection", lastIDs)
	}
	awaitCond(t, "tail to say it reconnects", func() bool { return strings.Contains(tailErr.String(), "reconnecting") })
}

// lockedBuffer is a bytes.Buffer that a process writes while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// With retention in the config file, /v1/replay's NDJSON says where it
// left out signals past it, and signalmesh replay tells so on stderr.
func TestReplaySaysWhereRetentionCut(t *testing.T) {
	cfg := writeConfig(t, `{"retention":[{"pattern":"sensor.**","max_age":"1h"}]}`)
	_, url, _ := daemon(t, "-mesh", "cli-retention", "-listen", "/ip4/127.0.0.1/tcp/0", "-http", "127.0.0.1:0", "-config", cfg)
	old := `{"specversion":"1.0","type":"sensor.temp","source":"/t","id":"old-1","time":"` +
		time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339) + `","data":1}`
	resp, err := http.Post(url+"/v1/publish", "application/cloudevents+json", strings.NewReader(old))
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("publish: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, _, errs := cli("publish", "-node", url, "sensor.temp", "2"); code != 0 {
		t.Fatalf("publish: %s", errs)
	}
	awaitCond(t, "the journal to hold 2 signals", func() bool {
		_, out, _ := cli("digest", "-node", url)
		f := strings.Fields(out)
		return len(f) == 2 && f[1] == "2"
	})
	resp, err = http.Get(url + "/v1/replay?format=ndjson")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 3 || lines[0] != `{"past_retention":1}` || strings.Contains(lines[1], "old-1") || !strings.Contains(lines[2], `"more":false`) {
		t.Fatalf("NDJSON replay:\n%s", body)
	}
	code, out, errs := cli("replay", "-node", url)
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(errs, "1 signals here are past retention") {
		t.Fatalf("replay: %d %q %q", code, out, errs)
	}
}
