package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cluster owns the node processes of one schedule.
type cluster struct {
	spec   Spec
	mesh   string
	dir    string
	net    network
	client *http.Client
	procs  []*proc
	log    func(format string, args ...any)
	setup  Setup
	// depWait is the nodes' DepWait (0: the node's default).
	depWait time.Duration

	// settleKill is when the settle kill (if any) was made, since the
	// workload started (written before finish reads it).
	settleKill time.Duration
	// hostile is the hostile node's report, once it stopped (finish).
	hostile *HostileReport

	cutMu sync.Mutex
	cuts  map[int][][2]int // directed pairs cut, per fault under way
}

// proc is one node: its directory, record, identity and current process.
type proc struct {
	i      int
	dir    string
	record string
	group  string // the group member's record (Parts.Group)
	id     string // libp2p peer id, known after the first start
	addr   string // libp2p multiaddr with /p2p/<id>

	// life is held by a process fault from its start to its end (a
	// restart that starts late must not meet the next fault on the node).
	life sync.Mutex

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd ends
	paused bool
	starts int
	// ends records how each process before the current one ended:
	// "kill" (SIGKILL by the harness), "term" (SIGTERM, clean) or "exit"
	// (it died by itself).
	ends []string
	// crashes counts the processes that ended by themselves.
	crashes int
	// epoch changes whenever the process starts, ends, pauses or
	// resumes: a publish answered in the epoch it was sent in, by a
	// running process, was answered by a live, unpaused node.
	epoch int
	// dropped sums the dropped_total counters of the ended processes;
	// rejected their rejected_total counters.
	dropped, rejected map[string]float64
	// pruned sums the pruned counters ("signals": pruned_total, "blocks":
	// pruned_blocks_total) of the ended processes.
	pruned map[string]float64
}

// live returns the epoch and whether the process runs unpaused.
func (p *proc) live() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.paused {
		return p.epoch, false
	}
	select {
	case <-p.exited:
		return p.epoch, false
	default:
		return p.epoch, true
	}
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.paused {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// start starts node i (again) on its data directory and waits until its
// API answers. In a full mesh every node bootstraps to every node started
// before it, and a restarted node to all the others, so that each pair
// has one side that redials the other; in a chain (Setup.Chain) node i
// bootstraps to i-1, and a restarted one to i-1 and i+1. In the NAT
// topology the nodes bootstrap to the public nodes alone (which start
// first), and find each other by discovery.
func (c *cluster) start(ctx context.Context, i int) error {
	p := c.procs[i]
	var boot []string
	relays := c.net.relays()
	for j, q := range c.procs {
		switch {
		case j == i || q.addr == "":
		case relays != nil: // the NAT topology: to the public nodes alone
			if slices.Contains(relays, j) {
				boot = append(boot, q.addr)
			}
		case !c.setup.Chain || j == i-1 || j == i+1:
			boot = append(boot, q.addr)
		}
	}
	// -insecure-http: with network namespaces the API listens on the
	// namespace's address (not loopback), which only this harness reaches.
	argv := append(append([]string(nil), c.spec.Command...),
		"-mesh", c.mesh, "-data-dir", filepath.Join(p.dir, "data"), "-listen", c.net.listen(i),
		"-http", c.net.api(i), "-record", p.record, "-fault-api", "-log-level", "warn", "-insecure-http",
		"-config", filepath.Join(c.dir, "params.json"))
	if c.setup.RecordDelay != "" {
		argv = append(argv, "-record-delay", c.setup.RecordDelay)
	}
	if c.setup.Group != "" {
		argv = append(argv, "-record-group", groupName, "-record-strategy", c.setup.Group, "-record-group-file", p.group)
	}
	if len(boot) > 0 {
		argv = append(argv, "-bootstrap", strings.Join(boot, ","))
	}
	if slices.Contains(relays, i) {
		argv = append(argv, "-relay") // a public node of the NAT topology
	}
	argv = append(argv, c.edgeRelays(i)...)
	l, err := c.launch(ctx, c.net.wrap(i, argv), filepath.Join(p.dir, "node.log"))
	if err != nil {
		return fmt.Errorf("chaos: node %d: %w", i, err)
	}
	p.mu.Lock()
	p.cmd, p.exited, p.paused = l.cmd, l.exited, false
	p.starts++
	p.epoch++
	if p.id == "" {
		p.id = l.id
		p.addr = c.net.listen(i) + "/p2p/" + p.id
	}
	p.mu.Unlock()
	c.log("node %d started (%s)", i, p.id)
	return nil
}

// launched is a node process that answers on its API.
type launched struct {
	cmd    *exec.Cmd
	exited chan struct{}
	id     string
}

// launch starts a node process with argv, its stderr to logPath, and waits
// until it prints its API address.
func (c *cluster) launch(ctx context.Context, argv []string, logPath string) (launched, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), c.spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return launched{}, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return launched{}, err
	}
	if err := cmd.Start(); err != nil {
		return launched{}, err
	}
	l := launched{cmd: cmd, exited: make(chan struct{})}
	lines := make(chan string, 16)
	go func() { // owned by the process: ends when its stdout closes
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		_ = cmd.Wait()
		close(l.exited)
	}()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return l, fmt.Errorf("exited at start (see %s)", logPath)
			}
			if rest, ok := strings.CutPrefix(line, "signalmesh node "); ok && l.id == "" {
				l.id, _, _ = strings.Cut(rest, ":")
			}
			if strings.HasPrefix(strings.TrimSpace(line), "http:") {
				go func() { // drain the rest (the shutdown lines)
					for range lines {
					}
				}()
				return l, nil
			}
		case <-deadline.C:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-l.exited
			return l, errors.New("did not start in 60 s")
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-l.exited
			return l, ctx.Err()
		}
	}
}

// kill sends SIGKILL to node i and waits for it to end.
func (c *cluster) kill(i int) {
	p := c.procs[i]
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	end := "kill"
	select {
	case <-exited:
		end = "exit" // it had died by itself
	default:
		c.scrape(i)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	p.mu.Lock()
	p.cmd, p.paused = nil, false
	p.epoch++
	p.ends = append(p.ends, end)
	if end == "exit" {
		p.crashes++
	}
	p.mu.Unlock()
	if end == "exit" {
		c.log("node %d had ended by itself", i)
	} else {
		c.log("node %d killed", i)
	}
}

// pause stops (SIGSTOP) or resumes (SIGCONT) node i.
func (c *cluster) pause(i int, stop bool) {
	p := c.procs[i]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	p.paused = stop
	p.epoch++
}

// stop ends node i cleanly (SIGCONT, SIGTERM), or with SIGKILL after 30 s.
func (c *cluster) stop(i int) error {
	p := c.procs[i]
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
	p.mu.Lock()
	p.paused = false
	p.epoch++
	p.mu.Unlock()
	c.scrape(i)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	end, err := "term", error(nil)
	select {
	case <-exited:
		if cmd.ProcessState != nil && !cmd.ProcessState.Success() {
			err = fmt.Errorf("chaos: node %d stopped with %v (see %s)", i, cmd.ProcessState, filepath.Join(p.dir, "node.log"))
		}
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		end, err = "kill", fmt.Errorf("chaos: node %d did not stop in 30 s after SIGTERM", i)
	}
	p.mu.Lock()
	p.cmd = nil
	p.epoch++
	p.ends = append(p.ends, end)
	p.mu.Unlock()
	return err
}

// scrape adds the watched dropped_total counters of node i's running
// process to the node's sums (called right before the process ends: the
// counters live as long as it).
func (c *cluster) scrape(i int) {
	p := c.procs[i]
	dropped, rejected, pruned, err := c.counters(i)
	if err != nil {
		c.log("node %d: metrics: %v", i, err)
		return
	}
	if dropped == nil {
		return // not running
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped == nil {
		p.dropped, p.rejected, p.pruned = map[string]float64{}, map[string]float64{}, map[string]float64{}
	}
	for r, v := range pruned {
		p.pruned[r] += v
	}
	for r, v := range dropped {
		p.dropped[r] += v
	}
	for r, v := range rejected {
		p.rejected[r] += v
	}
}

// counters reads the dropped_total and rejected_total counters of node
// i's running process, by reason, and its pruned counters (nil maps when
// it is not running).
func (c *cluster) counters(i int) (dropped, rejected, pruned map[string]float64, err error) {
	if _, ok := c.procs[i].live(); !ok {
		return nil, nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.net.api(i)+"/metrics", nil)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, nil, nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	dropped, rejected, pruned = map[string]float64{}, map[string]float64{}, map[string]float64{}
	for sc.Scan() {
		for prefix, what := range map[string]string{"signalmesh_pruned_total ": "signals", "signalmesh_pruned_blocks_total ": "blocks"} {
			if val, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				var v float64
				if _, err := fmt.Sscan(val, &v); err == nil {
					pruned[what] += v
				}
			}
		}
		for prefix, sums := range map[string]map[string]float64{`signalmesh_dropped_total{reason="`: dropped,
			`signalmesh_rejected_total{reason="`: rejected} {
			rest, ok := strings.CutPrefix(sc.Text(), prefix)
			if !ok {
				continue
			}
			reason, val, _ := strings.Cut(rest, `"} `)
			var v float64
			if _, err := fmt.Sscan(val, &v); err == nil {
				sums[reason] += v
			}
		}
	}
	return dropped, rejected, pruned, sc.Err()
}

// awaitFlood waits, until deadline, for some honest node (a process that
// ended or a running one) to count the hostile node's flood: its signals
// wait on predecessors that never exist and are given up only DepWait
// after the first arrived at a process, which may be well after the heal
// (a node restarted late in the run hears only the flood's last
// signals). Settling does not wait for them (recorded), so without this
// a schedule that settled fast read the counters before any node could
// have counted the flood (seed 12224: quiescent 12 s after the heal,
// dep_wait 35 s). It reports whether one did; the checker rules on it.
func (c *cluster) awaitFlood(ctx context.Context, deadline time.Time) bool {
	reasons := hostileReasons[AttackFlood]
	counted := func(m map[string]float64) bool {
		for _, why := range reasons {
			if m[strings.TrimPrefix(why, "dropped:")] > 0 {
				return true
			}
		}
		return false
	}
	for {
		for i, p := range c.procs {
			p.mu.Lock()
			ended := counted(p.dropped)
			p.mu.Unlock()
			if ended {
				return true
			}
			if d, _, _, err := c.counters(i); err == nil && counted(d) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// shutdown stops every node, by SIGKILL if stop fails; it returns the
// errors of clean stops.
func (c *cluster) shutdown() error {
	var errs []error
	for i := range c.procs {
		errs = append(errs, c.stop(i))
	}
	return errors.Join(errs...)
}

// edgeRelays are the flags of a node in node i's place (itself or a
// process beside it) when i is an edge of the NAT topology: a
// reservation on every public node (nil elsewhere).
func (c *cluster) edgeRelays(i int) []string {
	relays := c.net.relays()
	if relays == nil || slices.Contains(relays, i) {
		return nil
	}
	var addrs []string
	for _, r := range relays {
		if a := c.procs[r].addr; a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	return []string{"-relays", strings.Join(addrs, ",")}
}

// bootBeside is the bootstrap list of a process beside node host that
// would also bootstrap to node other: host, and other when a process
// there can dial it, else (the NAT topology) a public node in its place.
func (c *cluster) bootBeside(host, other int) []string {
	boot := []string{c.procs[host].addr}
	if !c.net.reach(host, other) {
		relays := c.net.relays()
		other = relays[other%len(relays)]
	}
	if other != host && c.procs[other].addr != "" {
		boot = append(boot, c.procs[other].addr)
	}
	return boot
}
