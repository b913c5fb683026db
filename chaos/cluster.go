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
}

// proc is one node: its directory, record, identity and current process.
type proc struct {
	i      int
	dir    string
	record string
	id     string // libp2p peer id, known after the first start
	addr   string // libp2p multiaddr with /p2p/<id>

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
// API answers. Every node bootstraps to every node started before it, and a
// restarted node to all the others, so that each pair has one side that
// redials the other.
func (c *cluster) start(ctx context.Context, i int) error {
	p := c.procs[i]
	var boot []string
	for j, q := range c.procs {
		if j != i && q.addr != "" {
			boot = append(boot, q.addr)
		}
	}
	argv := append(append([]string(nil), c.spec.Command...),
		"-mesh", c.mesh, "-data-dir", filepath.Join(p.dir, "data"), "-listen", c.net.listen(i),
		"-http", c.net.api(i), "-record", p.record, "-fault-api", "-log-level", "warn",
		"-config", filepath.Join(c.dir, "params.json"))
	if len(boot) > 0 {
		argv = append(argv, "-bootstrap", strings.Join(boot, ","))
	}
	argv = c.net.wrap(i, argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), c.spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(p.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start node %d: %w", i, err)
	}
	exited := make(chan struct{})
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
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.paused = cmd, exited, false
	p.starts++
	p.mu.Unlock()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return fmt.Errorf("chaos: node %d exited at start (see %s)", i, filepath.Join(p.dir, "node.log"))
			}
			if rest, ok := strings.CutPrefix(line, "signalmesh node "); ok && p.id == "" {
				p.id, _, _ = strings.Cut(rest, ":")
				p.addr = c.net.listen(i) + "/p2p/" + p.id
			}
			if strings.HasPrefix(strings.TrimSpace(line), "http:") {
				go func() { // drain the rest (the shutdown lines)
					for range lines {
					}
				}()
				c.log("node %d started (%s)", i, p.id)
				return nil
			}
		case <-deadline.C:
			_ = cmd.Process.Kill()
			return fmt.Errorf("chaos: node %d did not start in 60 s", i)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return ctx.Err()
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
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	p.mu.Lock()
	p.cmd, p.paused = nil, false
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
	p.ends = append(p.ends, end)
	p.mu.Unlock()
	return err
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
