package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// CatchUp: for each n in sizes, one peer on disk journals n signals (in
// Publish calls of 1,000), then a fresh peer on disk with default Params
// connects; measures the time from connecting until the fresh peer has
// delivered all n to a subscriber, in sequence, and the process's peak RSS
// during the catch-up (both peers are in this process: the figure is an
// upper bound on the fresh peer's). Every later size's time is also given
// as a ratio to the first's.
func CatchUp(ctx context.Context, env Env, sizes []int) (*Outcome, error) {
	o := &Outcome{}
	for _, n := range sizes {
		took, rss, err := catchUpOnce(ctx, env, n)
		if err != nil {
			return nil, fmt.Errorf("catch-up of %d: %w", n, err)
		}
		f := Figure{System: "signalmesh", Variant: fmt.Sprintf("n=%d", n), Metric: "catchup-to-delivered", Unit: "ms", Value: ms(took)}
		if len(o.Figures) > 0 {
			first := o.Figures[0]
			f.Note = fmt.Sprintf("%.2fx the time of %s; ", f.Value/first.Value, first.Variant)
		}
		f.Note += fmt.Sprintf("peak RSS %d MiB", rss>>20)
		o.add(f)
		o.add(Figure{System: "signalmesh", Variant: fmt.Sprintf("n=%d", n), Metric: "catchup-peak-rss", Unit: "MiB", Value: float64(rss >> 20)})
		took, err = rawCatchUp(ctx, n, env.Payload)
		if err != nil {
			return nil, fmt.Errorf("crdt-batched catch-up of %d: %w", n, err)
		}
		o.add(Figure{System: "crdt-batched", Variant: fmt.Sprintf("n=%d", n), Metric: "catchup-to-delivered", Unit: "ms", Value: ms(took),
			Note: "to every key's put hook (no order, no decoding); rebroadcast 2 s"})
	}
	return o, nil
}

// rawCatchUp is the baseline: two raw go-ds-crdt replicas on disk, cut;
// one writes n keys (batched), then they reconnect; the time from
// reconnecting until the other's put hook saw all n.
func rawCatchUp(ctx context.Context, n, payload int) (time.Duration, error) {
	dir, err := tempDirFor("catchup-raw")
	if err != nil {
		return 0, err
	}
	defer removeAll(dir)
	raw, rc, err := newRaw(ctx, 2, RawOptions{CRDT: true, Topic: "catchup", Rebroadcast: 2 * time.Second}, dir)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	rc.cut([]int{0}, []int{1})
	if err := rawWrite(ctx, raw[0], "w", n, payload); err != nil {
		return 0, err
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool { return raw[0].Puts.Load() >= int64(n) }); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := rc.heal(ctx); err != nil {
		return 0, err
	}
	if _, err := Await(ctx, 30*time.Minute, func() bool { return raw[1].Puts.Load() >= int64(n) }); err != nil {
		return 0, fmt.Errorf("arrived %d of %d: %w", raw[1].Puts.Load(), n, err)
	}
	return time.Since(start), nil
}

func catchUpOnce(ctx context.Context, env Env, n int) (time.Duration, int64, error) {
	mesh := fmt.Sprintf("catchup-%d-%d", n, time.Now().UnixNano())
	dirs := make([]string, 2)
	for i := range dirs {
		d, err := tempDirFor("catchup")
		if err != nil {
			return 0, 0, err
		}
		defer removeAll(d)
		dirs[i] = d
	}
	quiet := Quiet()
	src, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dirs[0], ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	payload := make([]byte, env.Payload)
	for sent := 0; sent < n; {
		batch := make([]*signalmesh.Signal, min(1000, n-sent))
		for i := range batch {
			s, err := signalmesh.New("bench.catchup", "/bench", payload)
			if err != nil {
				return 0, 0, err
			}
			batch[i] = s
		}
		if err := src.Publish(ctx, batch...); err != nil {
			return 0, 0, err
		}
		sent += len(batch)
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool {
		c, _, err := src.JournalDigest(ctx)
		return err == nil && c == n
	}); err != nil {
		return 0, 0, fmt.Errorf("source journal: %w", err)
	}
	fresh, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dirs[1], ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return 0, 0, err
	}
	defer fresh.Close()
	var got atomic.Int64
	var mu sync.Mutex
	var orderErr error
	last := uint64(0)
	if _, err := fresh.Subscribe("**", func(_ context.Context, s *signalmesh.Signal) error {
		_, seq := journal.Place(s)
		mu.Lock()
		if seq != last+1 && orderErr == nil {
			orderErr = fmt.Errorf("delivered sequence %d after %d", seq, last)
		}
		last = seq
		mu.Unlock()
		got.Add(1)
		return nil
	}); err != nil {
		return 0, 0, err
	}
	resetPeakRSS()
	start := time.Now()
	if err := fresh.Connect(ctx, src.AddrInfo()); err != nil {
		return 0, 0, err
	}
	if _, err := Await(ctx, 30*time.Minute, func() bool { return got.Load() >= int64(n) }); err != nil {
		return 0, 0, fmt.Errorf("delivered %d of %d: %w", got.Load(), n, err)
	}
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if orderErr != nil {
		return 0, 0, orderErr
	}
	return took, peakRSS(), nil
}

// resetPeakRSS resets the process's high-water mark of resident memory
// (Linux: clear_refs 5); elsewhere it does nothing.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is the process's high-water mark of resident memory in bytes
// since start or the last resetPeakRSS (Linux VmHWM; 0 elsewhere).
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
