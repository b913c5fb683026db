package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// One OS process per peer: the harness starts its own executable with
// AgentEnv set to the agent's JSON config; the child runs AgentMain and
// answers JSON-line calls on stdin/stdout. A binary that runs the harness
// must call AgentMain first thing in main (cmd/signalmesh and the bench
// tests do):
//
//	if bench.IsAgent() {
//		os.Exit(bench.AgentMain())
//	}
const AgentEnv = "SIGNALMESH_BENCH_AGENT"

// IsAgent reports whether this process was started as a benchmark agent.
func IsAgent() bool { return os.Getenv(AgentEnv) != "" }

type call struct {
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

type reply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// AgentMain runs an agent on stdin/stdout until it is told to close or its
// stdin ends (the harness went away); it returns the exit code.
func AgentMain() int {
	var cfg AgentConfig
	if err := json.Unmarshal([]byte(os.Getenv(AgentEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench agent: config:", err)
		return 2
	}
	if cfg.Kind == KindReopen || cfg.Kind == KindReopenRaw {
		return reopenMain(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := newAgent(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var wmu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	send := func(r reply) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = enc.Encode(r)
	}
	info, _ := json.Marshal(a.Info())
	send(reply{Result: info})
	var wg sync.WaitGroup
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, "bench agent: bad call:", err)
			continue
		}
		if c.Method == "close" {
			cancel()
			wg.Wait()
			err := a.Close()
			r := reply{ID: c.ID, Result: json.RawMessage("null")}
			if err != nil {
				r.Error = err.Error()
			}
			send(r)
			return 0
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := serve(ctx, a, c)
			r := reply{ID: c.ID}
			if err != nil {
				r.Error = err.Error()
			} else if r.Result, err = json.Marshal(res); err != nil {
				r.Error = err.Error()
			}
			send(r)
		}()
	}
	cancel()
	wg.Wait()
	_ = a.Close()
	return 0
}

func serve(ctx context.Context, a *agent, c call) (any, error) {
	switch c.Method {
	case "connect":
		var peers []Info
		if err := json.Unmarshal(c.Params, &peers); err != nil {
			return nil, err
		}
		return nil, a.Connect(ctx, peers)
	case "block":
		var ids []string
		if err := json.Unmarshal(c.Params, &ids); err != nil {
			return nil, err
		}
		return nil, a.Block(ids)
	case "unblock":
		return nil, a.Unblock()
	case "watch":
		var pattern string
		if err := json.Unmarshal(c.Params, &pattern); err != nil {
			return nil, err
		}
		return nil, a.Watch(ctx, pattern)
	case "publish":
		var req PublishReq
		if err := json.Unmarshal(c.Params, &req); err != nil {
			return nil, err
		}
		return nil, a.Publish(ctx, req)
	case "count":
		return a.Count()
	case "arrivals":
		return a.Arrivals()
	case "sent":
		return a.Sent()
	case "digest":
		n, d, err := a.Digest(ctx)
		return [2]any{n, d}, err
	case "stats":
		return a.Stats(ctx)
	case "journaled":
		return a.Journaled(ctx)
	}
	return nil, fmt.Errorf("unknown method %q", c.Method)
}

// remote is a Peer in a child process.
type remote struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	info   Info
	stderr *tail

	mu      sync.Mutex // guards next, pending, err, and writes to stdin
	next    int64
	pending map[int64]chan reply
	err     error // set when the child's stdout ended
	done    chan struct{}
}

// startRemote starts an agent process and waits for it to say where it listens.
func startRemote(ctx context.Context, cfg AgentConfig) (*remote, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(cfg)
	r := &remote{cmd: exec.Command(exe), stderr: &tail{max: 4096}, pending: map[int64]chan reply{}, done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), AgentEnv+"="+string(b))
	r.cmd.Stderr = r.stderr
	// The child dies with the harness, even when the harness is killed.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start agent: %w", err)
	}
	ready := make(chan reply, 1)
	r.pending[0] = ready
	go r.read(out)
	select {
	case rep := <-ready:
		if rep.Error != "" {
			r.kill()
			return nil, fmt.Errorf("bench: agent: %s", rep.Error)
		}
		if err := json.Unmarshal(rep.Result, &r.info); err != nil {
			r.kill()
			return nil, err
		}
		return r, nil
	case <-ctx.Done():
		r.kill()
		return nil, ctx.Err()
	}
}

// read delivers the child's replies until its stdout ends.
func (r *remote) read(out io.Reader) {
	defer close(r.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var rep reply
		if json.Unmarshal(sc.Bytes(), &rep) != nil {
			continue
		}
		r.mu.Lock()
		ch := r.pending[rep.ID]
		delete(r.pending, rep.ID)
		r.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	r.mu.Lock()
	r.err = fmt.Errorf("bench: agent process ended: %s", r.stderr.String())
	for id, ch := range r.pending {
		ch <- reply{ID: id, Error: r.err.Error()}
		delete(r.pending, id)
	}
	r.mu.Unlock()
}

func (r *remote) call(ctx context.Context, method string, params, result any) error {
	var raw json.RawMessage
	if params != nil {
		raw, _ = json.Marshal(params)
	}
	ch := make(chan reply, 1)
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return r.err
	}
	r.next++
	id := r.next
	r.pending[id] = ch
	b, _ := json.Marshal(call{ID: id, Method: method, Params: raw})
	_, err := r.stdin.Write(append(b, '\n'))
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("bench: agent %s: %w", method, err)
	}
	select {
	case rep := <-ch:
		if rep.Error != "" {
			return fmt.Errorf("bench: agent %s: %s", method, rep.Error)
		}
		if result != nil {
			return json.Unmarshal(rep.Result, result)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var bg = context.Background()

func (r *remote) Info() Info { return r.info }
func (r *remote) Connect(ctx context.Context, peers []Info) error {
	return r.call(ctx, "connect", peers, nil)
}
func (r *remote) Block(ids []string) error { return r.call(bg, "block", ids, nil) }
func (r *remote) Unblock() error           { return r.call(bg, "unblock", nil, nil) }
func (r *remote) Watch(ctx context.Context, pattern string) error {
	return r.call(ctx, "watch", pattern, nil)
}
func (r *remote) Publish(ctx context.Context, req PublishReq) error {
	return r.call(ctx, "publish", req, nil)
}
func (r *remote) Count() (n int, err error) { err = r.call(bg, "count", nil, &n); return }
func (r *remote) Arrivals() (m map[string]int64, err error) {
	err = r.call(bg, "arrivals", nil, &m)
	return
}
func (r *remote) Sent() (m map[string]Sent, err error) { err = r.call(bg, "sent", nil, &m); return }
func (r *remote) Digest(ctx context.Context) (int, string, error) {
	var out [2]json.RawMessage
	if err := r.call(ctx, "digest", nil, &out); err != nil {
		return 0, "", err
	}
	var n int
	var d string
	_ = json.Unmarshal(out[0], &n)
	_ = json.Unmarshal(out[1], &d)
	return n, d, nil
}
func (r *remote) Journaled(ctx context.Context) (n int64, err error) {
	err = r.call(ctx, "journaled", nil, &n)
	return
}
func (r *remote) Stats(ctx context.Context) (st Stats, err error) {
	err = r.call(ctx, "stats", nil, &st)
	return
}

// Close asks the agent to close and waits for the process to exit (killing
// it after 30 s).
func (r *remote) Close() error {
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	err := r.call(ctx, "close", nil, nil)
	_ = r.stdin.Close()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.kill()
		<-r.done
	}
	werr := r.cmd.Wait()
	if err != nil {
		return err
	}
	return werr
}

func (r *remote) kill() {
	_ = r.cmd.Process.Kill()
	_ = r.stdin.Close()
	<-r.done
	_ = r.cmd.Wait()
}

// tail keeps the last max bytes written to it (a child's stderr).
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

var errNoPeers = errors.New("bench: no peers")
