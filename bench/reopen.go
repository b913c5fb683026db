package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// KindReopen is an agent that opens a signalmesh node on an existing data
// directory, publishes one signal, reports what that took (reopenReport)
// on stdout, closes and exits. It runs in a process of its own so that its
// memory is the reopened node's alone.
const KindReopen = "reopen"

// KindReopenRaw is the same for a raw go-ds-crdt store on disk (the
// baseline): NewRawPeer, then one Put.
const KindReopenRaw = "reopen-raw"

// reopenReport is what a reopen agent measured.
type reopenReport struct {
	OpenMS     float64 `json:"open_ms"`       // node.New
	FirstMS    float64 `json:"first_ms"`      // node.New and the first Publish
	RSS        int64   `json:"rss"`           // VmRSS after the first Publish, bytes
	HWM        int64   `json:"hwm"`           // VmHWM then: the peak so far
	HeapInuse  uint64  `json:"heap_inuse"`    // Go heap in use after a GC
	Goroutines int     `json:"goroutines"`    // after the first Publish
	CloseMS    float64 `json:"close_ms"`      // Close
	Err        string  `json:"err,omitempty"` // what failed

	// After the first Publish (signalmesh only): Subscribe
	// WithName(reopenSubName) until its handler got the signal published
	// since the reopen, what it got until Close, the Go bytes allocated
	// meanwhile (garbage included), and the growth of VmRSS and of the Go
	// heap in use (after a GC) that resuming caused, bytes.
	ResumeMS         float64 `json:"resume_ms"`
	ResumeGot        int     `json:"resume_got"`
	ResumeAlloc      uint64  `json:"resume_alloc"`
	ResumeRSSGrowth  int64   `json:"resume_rss_growth"`
	ResumeHeapGrowth int64   `json:"resume_heap_growth"`
	// Then Effects of the history's cause (AgentConfig.Cause): how long,
	// how many signals it returned, and the Go bytes it allocated.
	EffectsMS    float64 `json:"effects_ms"`
	EffectsGot   int     `json:"effects_got"`
	EffectsAlloc uint64  `json:"effects_alloc"`
}

// reopenMain is a reopen agent's main.
func reopenMain(cfg AgentConfig) int {
	var rep reopenReport
	if err := reopenOnce(cfg, &rep); err != nil {
		rep.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	if rep.Err != "" {
		return 1
	}
	return 0
}

func reopenOnce(cfg AgentConfig, rep *reopenReport) error {
	if cfg.Kind == KindReopenRaw {
		return reopenRaw(cfg, rep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	n, err := node.New(ctx, node.Config{Mesh: cfg.Mesh, DataDir: cfg.DataDir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: Quiet()})
	if err != nil {
		return err
	}
	rep.OpenMS = ms(time.Since(start))
	s, err := signalmesh.New("bench.reopen", "/bench", []byte("first after reopen"))
	if err == nil {
		err = n.Publish(ctx, s)
	}
	rep.FirstMS = ms(time.Since(start))
	rep.RSS, rep.HWM = procStatus("VmRSS:"), procStatus("VmHWM:")
	rep.Goroutines = runtime.NumGoroutine()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rep.HeapInuse = m.HeapInuse
	var got atomic.Int64 // the resumed subscription's handler counts; the node runs it until Close
	if err == nil {
		err = resumeAfterReopen(ctx, n, rep, &got)
	}
	if err == nil {
		err = effectsAfterReopen(ctx, n, cfg, rep)
	}
	closed := time.Now()
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	rep.CloseMS = ms(time.Since(closed))
	rep.ResumeGot = int(got.Load())
	return err
}

func reopenRaw(cfg AgentConfig, rep *reopenReport) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	p, err := NewRawPeer(RawOptions{CRDT: true, DataDir: cfg.DataDir, Topic: cfg.Mesh})
	if err != nil {
		return err
	}
	rep.OpenMS = ms(time.Since(start))
	err = p.CRDT.Put(ctx, ds.NewKey("/first/after/reopen"), []byte("x"))
	rep.FirstMS = ms(time.Since(start))
	rep.RSS, rep.HWM = procStatus("VmRSS:"), procStatus("VmHWM:")
	rep.Goroutines = runtime.NumGoroutine()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rep.HeapInuse = m.HeapInuse
	closed := time.Now()
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	rep.CloseMS = ms(time.Since(closed))
	return err
}

// rawOnDisk has a raw go-ds-crdt store on disk in dir write n keys (in
// batches of 1,000) and close.
func rawOnDisk(ctx context.Context, topic, dir string, n, payload int) error {
	p, err := NewRawPeer(RawOptions{CRDT: true, DataDir: dir, Topic: topic})
	if err != nil {
		return err
	}
	for sent := 0; sent < n && err == nil; sent += 1000 {
		err = rawWrite(ctx, p, fmt.Sprintf("b%d", sent), min(1000, n-sent), payload)
	}
	if err == nil {
		_, err = Await(ctx, 10*time.Minute, func() bool { return p.Puts.Load() >= int64(n) })
	}
	return errors.Join(err, p.Close()) // Close is not idempotent
}

// Reopen: for each n in sizes, one peer on disk journals n signals (in
// Publish calls of 1,000) and closes; then reopens times times, each in a
// fresh process (KindReopen), and reports the median time from node.New
// until the first Publish returned, the median resident memory right
// after, and the Go heap in use after a GC, with every run's figure in the
// note. Then, in the same processes, what users do after a restart (see
// afterReopenFigures): resume the named subscription that handled the
// whole history before the close, and ask for the effects of its first
// signal. The same for a raw go-ds-crdt store on disk (reopen and one Put)
// is the baseline: it reads no history at open, and keeps every delta.
func Reopen(ctx context.Context, env Env, sizes []int, times int) (*Outcome, error) {
	o := &Outcome{}
	for _, n := range sizes {
		if n < 1 {
			return nil, fmt.Errorf("bench: reopen of %d signals: at least 1", n)
		}
		reps, disk, err := reopenRuns(ctx, env, n, times)
		if err != nil {
			return nil, fmt.Errorf("reopen of %d: %w", n, err)
		}
		v := fmt.Sprintf("n=%d", n)
		first := reportsOf(reps, func(r reopenReport) float64 { return r.FirstMS })
		rss := reportsOf(reps, func(r reopenReport) float64 { return float64(r.RSS >> 20) })
		heap := reportsOf(reps, func(r reopenReport) float64 { return float64(r.HeapInuse >> 20) })
		o.add(Figure{System: KindMesh, Variant: v, Metric: "reopen-first-publish", Unit: "ms", Value: median(first),
			Note: fmt.Sprintf("runs %s; disk %d MiB", list(first), disk>>20)})
		o.add(Figure{System: KindMesh, Variant: v, Metric: "reopen-rss", Unit: "MiB", Value: median(rss), Note: "runs " + list(rss)})
		o.add(Figure{System: KindMesh, Variant: v, Metric: "reopen-heap", Unit: "MiB", Value: median(heap), Note: "runs " + list(heap)})
		o.add(afterReopenFigures(v, reps)...)
		if reps, disk, err = rawReopenRuns(ctx, env, n, times); err != nil {
			return nil, fmt.Errorf("raw reopen of %d: %w", n, err)
		}
		first = reportsOf(reps, func(r reopenReport) float64 { return r.FirstMS })
		rss = reportsOf(reps, func(r reopenReport) float64 { return float64(r.RSS >> 20) })
		o.add(Figure{System: "crdt-batched", Variant: v, Metric: "reopen-first-publish", Unit: "ms", Value: median(first),
			Note: fmt.Sprintf("to the first Put; runs %s; disk %d MiB", list(first), disk>>20)})
		o.add(Figure{System: "crdt-batched", Variant: v, Metric: "reopen-rss", Unit: "MiB", Value: median(rss), Note: "runs " + list(rss)})
	}
	return o, nil
}

// rawReopenRuns is reopenRuns for the raw go-ds-crdt baseline.
func rawReopenRuns(ctx context.Context, env Env, n, times int) ([]reopenReport, int64, error) {
	dir, err := tempDirFor("reopen-raw")
	if err != nil {
		return nil, 0, err
	}
	defer removeAll(dir)
	topic := fmt.Sprintf("reopen-raw-%d-%d", n, time.Now().UnixNano())
	if err := rawOnDisk(ctx, topic, dir, n, env.Payload); err != nil {
		return nil, 0, err
	}
	disk := dirSize(dir)
	var reps []reopenReport
	for range times {
		rep, err := runReopenAgent(ctx, AgentConfig{Kind: KindReopenRaw, Mesh: topic, DataDir: dir})
		if err != nil {
			return nil, 0, err
		}
		reps = append(reps, rep)
	}
	return reps, disk, nil
}

func reportsOf(reps []reopenReport, f func(reopenReport) float64) []float64 {
	out := make([]float64, len(reps))
	for i, r := range reps {
		out[i] = f(r)
	}
	slices.Sort(out)
	return out
}

func list(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = trim(x)
	}
	return strings.Join(s, ", ")
}

// reopenRuns builds a journal of n signals and reopens it times times.
func reopenRuns(ctx context.Context, env Env, n, times int) ([]reopenReport, int64, error) {
	dir, err := tempDirFor("reopen")
	if err != nil {
		return nil, 0, err
	}
	defer removeAll(dir)
	mesh := fmt.Sprintf("reopen-%d-%d", n, time.Now().UnixNano())
	hist, err := journalOnDisk(ctx, mesh, dir, n, env.Payload)
	if err != nil {
		return nil, 0, err
	}
	disk := dirSize(dir)
	var reps []reopenReport
	for range times {
		rep, err := runReopenAgent(ctx, AgentConfig{Kind: KindReopen, Mesh: mesh, DataDir: dir, Cause: hist.cause, Effects: hist.effects})
		if err != nil {
			return nil, 0, err
		}
		reps = append(reps, rep)
	}
	return reps, disk, nil
}

// journalOnDisk has one peer on disk in dir journal n signals
// (historySignal: the first causes a few later ones), all handled by a
// subscription named reopenSubName, and close, which saves its cursor.
func journalOnDisk(ctx context.Context, mesh, dir string, n, payload int) (history, error) {
	src, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: Quiet()})
	if err != nil {
		return history{}, err
	}
	defer src.Close()
	var handled atomic.Int64
	count := func(context.Context, *signalmesh.Signal) error { handled.Add(1); return nil }
	if _, err := src.Subscribe(reopenType, count, node.WithName(reopenSubName)); err != nil {
		return history{}, err
	}
	data := make([]byte, payload)
	var cause *signalmesh.Signal
	for sent := 0; sent < n; {
		batch := make([]*signalmesh.Signal, min(1000, n-sent))
		for i := range batch {
			if batch[i], err = historySignal(sent+i, n, data, cause); err != nil {
				return history{}, err
			}
			if cause == nil {
				cause = batch[i]
			}
		}
		if err := src.Publish(ctx, batch...); err != nil {
			return history{}, err
		}
		sent += len(batch)
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool {
		c, _, err := src.JournalDigest(ctx)
		return err == nil && c == n
	}); err != nil {
		return history{}, fmt.Errorf("journal: %w", err)
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool { return handled.Load() >= int64(n) }); err != nil {
		return history{}, fmt.Errorf("subscription %s handled %d of %d: %w", reopenSubName, handled.Load(), n, err)
	}
	return history{cause: cause.ID, effects: effectsOf(n)}, src.Close()
}

func runReopenAgent(ctx context.Context, cfg AgentConfig) (reopenReport, error) {
	exe, err := os.Executable()
	if err != nil {
		return reopenReport{}, err
	}
	b, _ := json.Marshal(cfg)
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), AgentEnv+"="+string(b))
	var out bytes.Buffer
	stderr := &tail{max: 4096}
	cmd.Stdout, cmd.Stderr = &out, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runErr := cmd.Run()
	var rep reopenReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("bench: reopen agent: %v (exit %v; stderr %s)", err, runErr, stderr.String())
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("bench: reopen agent: %s", rep.Err)
	}
	return rep, nil
}

// procStatus reads one field of /proc/self/status in bytes (0 when it
// cannot: not Linux).
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}
