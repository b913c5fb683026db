package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/signalmesh/signalmesh/internal/netns"
)

// network places the nodes and cuts the links between them.
type network interface {
	// name says what the network is, for the report.
	name() string
	// wrap returns the command that runs argv as node i.
	wrap(i int, argv []string) []string
	// listen is node i's libp2p listen address; api its HTTP API address.
	listen(i int) string
	api(i int) string
	// cut makes each directed pair's first node unable to send to its
	// second, lifting every earlier cut; an empty list heals everything.
	cut(ctx context.Context, pairs [][2]int, c *cluster) error
	// extra is the libp2p listen and API addresses of the k-th ephemeral
	// node, which runs beside (in the namespace of) node host.
	extra(host, k int) (listen, api string)
	// slow shapes node i's link (on) or lifts the shaping.
	slow(i int, on bool) error
	canSlow() bool
	// relays are the nodes that relay for the others (the NAT topology's
	// public nodes; nil: every node reaches every other directly): the
	// others bootstrap to them alone and keep a reservation on them.
	relays() []int
	// reach says whether a process beside node from can dial node to's
	// listen address.
	reach(from, to int) bool
	close() error
}

// netnsNet runs each node in a network namespace of its own, joined to a
// bridge by a veth pair. A cut is a pair of blackhole routes, so packets
// really do not cross; slow links are a qdisc on the node's veth.
type netnsNet struct {
	id     int // the harness's pid: names are smc<pid>...
	n      int
	subnet int
	netem  bool
}

const netnsPrefix = "smc"

var ipRun = netns.IP

// netnsAvailable says whether this process can make namespaces.
func netnsAvailable() bool {
	return netns.Available(fmt.Sprintf("%sprobe%d", netnsPrefix, os.Getpid()))
}

func newNetnsNet(n int) (_ *netnsNet, err error) {
	nn := &netnsNet{id: os.Getpid(), n: n, subnet: 100 + os.Getpid()%150}
	defer func() {
		if err != nil {
			_ = nn.close()
		}
	}()
	br := nn.bridge()
	if err := ipRun("link", "add", br, "type", "bridge"); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"addr", "add", fmt.Sprintf("10.213.%d.1/24", nn.subnet), "dev", br},
		{"link", "set", br, "up"},
	} {
		if err := ipRun(args...); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		ns, host, peer := nn.ns(i), fmt.Sprintf("%s%dh%d", netnsPrefix, nn.id, i), fmt.Sprintf("%s%dp%d", netnsPrefix, nn.id, i)
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"link", "add", host, "type", "veth", "peer", "name", peer},
			{"link", "set", host, "master", br, "up"},
			{"link", "set", peer, "netns", ns},
			{"-n", ns, "link", "set", peer, "name", "eth0"},
			{"-n", ns, "addr", "add", nn.ip(i) + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if err := ipRun(args...); err != nil {
				return nil, err
			}
		}
	}
	probe := exec.Command("ip", "netns", "exec", nn.ns(0), "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
	if probe.Run() == nil {
		nn.netem = true
		_ = exec.Command("ip", "netns", "exec", nn.ns(0), "tc", "qdisc", "del", "dev", "lo", "root").Run()
	}
	return nn, nil
}

func (nn *netnsNet) bridge() string  { return fmt.Sprintf("%s%dbr", netnsPrefix, nn.id) }
func (nn *netnsNet) ns(i int) string { return fmt.Sprintf("%s%dn%d", netnsPrefix, nn.id, i) }
func (nn *netnsNet) ip(i int) string { return fmt.Sprintf("10.213.%d.%d", nn.subnet, 10+i) }

func (nn *netnsNet) name() string {
	shaping := "tbf rate limit (no sch_netem in this kernel)"
	if nn.netem {
		shaping = "netem delay and loss"
	}
	return fmt.Sprintf("network namespaces (one per node, veth + bridge; cuts are blackhole routes; slow links: %s)", shaping)
}

func (nn *netnsNet) wrap(i int, argv []string) []string { return netns.Cmd(nn.ns(i), argv) }
func (nn *netnsNet) listen(i int) string                { return fmt.Sprintf("/ip4/%s/tcp/4001", nn.ip(i)) }
func (nn *netnsNet) api(i int) string                   { return nn.ip(i) + ":7070" }
func (nn *netnsNet) canSlow() bool                      { return true }
func (nn *netnsNet) relays() []int                      { return nil }
func (nn *netnsNet) reach(int, int) bool                { return true }

func (nn *netnsNet) cut(_ context.Context, pairs [][2]int, _ *cluster) error {
	var errs []error
	for i := 0; i < nn.n; i++ {
		errs = append(errs, ipRun("-n", nn.ns(i), "route", "flush", "type", "blackhole"))
	}
	for _, p := range pairs {
		errs = append(errs, ipRun("-n", nn.ns(p[0]), "route", "add", "blackhole", nn.ip(p[1])+"/32"))
	}
	return errors.Join(errs...)
}

func (nn *netnsNet) extra(host, k int) (string, string) {
	return fmt.Sprintf("/ip4/%s/tcp/%d", nn.ip(host), 4100+k), fmt.Sprintf("%s:%d", nn.ip(host), 7100+k)
}

// slowLink slows namespace ns's eth0 (a token bucket of 512 kbit/s, or
// with netem a delay of 80 +- 30 ms and 2 % loss), or (on false) restores it.
func slowLink(ns string, netem, on bool) error {
	if !on {
		return ipRun("netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root")
	}
	q := []string{"tbf", "rate", "512kbit", "burst", "16kbit", "latency", "300ms"}
	if netem {
		q = []string{"netem", "delay", "80ms", "30ms", "loss", "2%"}
	}
	return ipRun(append([]string{"netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root"}, q...)...)
}

func (nn *netnsNet) slow(i int, on bool) error { return slowLink(nn.ns(i), nn.netem, on) }

func (nn *netnsNet) close() error {
	var errs []error
	for i := 0; i < nn.n; i++ {
		// The host end first: deleting it deletes the pair at once, where a
		// namespace's own links go when the kernel gets round to it.
		if err := ipRun("link", "del", fmt.Sprintf("%s%dh%d", netnsPrefix, nn.id, i)); err != nil && !strings.Contains(err.Error(), "Cannot find") {
			errs = append(errs, err)
		}
		if err := ipRun("netns", "del", nn.ns(i)); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if err := ipRun("link", "del", nn.bridge()); err != nil && !strings.Contains(err.Error(), "Cannot find") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// staleName matches the names of both topologies' namespaces and links:
// node (n), router (r), veth ends (h, m, u; p while being made), bridges.
var staleName = regexp.MustCompile(`^` + netnsPrefix + `(\d+)(?:[nrhmu]\d+p?|p\d+|br|mb|probe)$`)

// CleanStale removes the namespaces, links and temporary directories that
// an earlier run left behind when it was killed (its pid is gone), and
// reports what it removed.
func CleanStale() []string {
	var removed []string
	gone := func(name string) bool {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			return false
		}
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist)
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && gone(f[0]) && ipRun("netns", "del", f[0]) == nil {
				removed = append(removed, f[0])
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if gone(name) && ipRun("link", "del", name) == nil {
				removed = append(removed, name)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "signalmesh-chaos-*"))
	for _, d := range dirs {
		m := staleDir.FindStringSubmatch(filepath.Base(d))
		if m == nil {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); errors.Is(err, os.ErrNotExist) && os.RemoveAll(d) == nil {
			removed = append(removed, d)
		}
	}
	return removed
}

var staleDir = regexp.MustCompile(`^signalmesh-chaos-(\d+)-`)

// loopNet runs every node on 127.0.0.1 and cuts with each node's
// connection gater (the daemon's -fault-api): connections are refused and
// closed, but packets are not cut.
type loopNet struct {
	p2p, http []int
}

func newLoopNet(n int) (*loopNet, error) {
	l := &loopNet{}
	for i := 0; i < n; i++ {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		b, err := freePort()
		if err != nil {
			return nil, err
		}
		l.p2p, l.http = append(l.p2p, a), append(l.http, b)
	}
	return l, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (l *loopNet) name() string {
	return "loopback with connection gaters (no network namespaces here: cuts refuse and close connections, packets are not cut; no slow links)"
}
func (l *loopNet) wrap(_ int, argv []string) []string { return argv }
func (l *loopNet) listen(i int) string                { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.p2p[i]) }
func (l *loopNet) api(i int) string                   { return fmt.Sprintf("127.0.0.1:%d", l.http[i]) }
func (l *loopNet) canSlow() bool                      { return false }
func (l *loopNet) relays() []int                      { return nil }
func (l *loopNet) reach(int, int) bool                { return true }
func (l *loopNet) slow(int, bool) error               { return errors.New("chaos: no slow links on loopback") }
func (l *loopNet) close() error                       { return nil }

func (l *loopNet) extra(int, int) (string, string) {
	a, _ := freePort()
	b, _ := freePort()
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", a), fmt.Sprintf("127.0.0.1:%d", b)
}

// cut tells every running node which peers to refuse. A node that is down
// or paused is told when it comes back (cluster.reapply).
func (l *loopNet) cut(ctx context.Context, pairs [][2]int, c *cluster) error {
	var errs []error
	for i := range c.procs {
		if err := l.tell(ctx, i, pairs, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *loopNet) tell(ctx context.Context, i int, pairs [][2]int, c *cluster) error {
	p := c.procs[i]
	if !p.running() {
		return nil
	}
	var peers []string
	for _, pr := range pairs {
		if pr[0] == i && !slices.Contains(peers, c.procs[pr[1]].id) {
			peers = append(peers, c.procs[pr[1]].id)
		}
	}
	path, body := "/v1/fault/heal", []byte("{}")
	if len(peers) > 0 {
		path = "/v1/fault/block"
		body, _ = json.Marshal(map[string]any{"peers": peers})
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+l.api(i)+path, bytes.NewReader(body))
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("node %d: %s: %w", i, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %d: %s: %s", i, path, resp.Status)
	}
	return nil
}
