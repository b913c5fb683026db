package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
)

// Entry is one line of a delivery record: either the mark of a process
// start (Start), or one delivery to the recording subscription.
type Entry struct {
	// Start marks that a node process (re)started: the deliveries after it
	// are that process's.
	Start  bool   `json:"start,omitempty"`
	Source string `json:"source,omitempty"`
	ID     string `json:"id,omitempty"`
	Type   string `json:"type,omitempty"`
	Cause  string `json:"cause,omitempty"`
	// Peer, Clock and Causal are the signal's meshpeer, meshclock and
	// meshcausal extensions (its origin and causal metadata, in the first
	// or the bounded format; see ParseMeta).
	Peer   string `json:"peer,omitempty"`
	Clock  string `json:"clock,omitempty"`
	Causal string `json:"causal,omitempty"`
	// Sum is a digest of the signal's data (see DataSum).
	Sum string `json:"sum,omitempty"`
	// Again marks a delivery of an id this record already holds: the
	// subscription handed the signal over twice. A persistent subscription
	// is at least once across a crash (its cursor is saved after each
	// signal), so this may follow a kill -9 and nothing else; the checker
	// says which.
	Again bool `json:"again,omitempty"`
	// T is when the line was written (Unix nanoseconds, the recording
	// host's clock): the process's start, or the delivery's handling. The
	// group rule places handlings in failover windows by it.
	T int64 `json:"t,omitempty"`
}

// Recorder appends what a persistent subscription delivers to a file, one
// JSON line per delivery, each line one write(2), so that a process killed
// with SIGKILL loses no line it has returned from (the kernel keeps the
// write). It is an idempotent consumer: an id it holds already is written
// again only as an Again line. Its Handle method is safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	f     *os.File
	seen  map[Key]bool
	delay Delay
}

// Key is a signal's identity: (source, id), as CloudEvents defines it.
type Key struct {
	Source string `json:"source"`
	ID     string `json:"id"`
}

func (k Key) String() string { return k.Source + " " + k.ID }

// Key is the identity of the recorded signal.
func (e Entry) Key() Key { return Key{e.Source, e.ID} }

// Meta parses the recorded causal metadata.
func (e Entry) Meta() (Meta, error) { return ParseMeta(e.Peer, e.Causal, e.Clock) }

// DataSum is a short digest of a signal's data (JSON compacted first),
// compared by the checker.
func DataSum(data []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, data) == nil {
		data = b.Bytes()
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:8])
}

// Delay makes a recording handler slow: each signal waits a time drawn
// log-uniformly from [Min, Max] by a hash of its identity (the same signal
// waits the same on every node and run). The zero Delay waits nothing.
type Delay struct{ Min, Max time.Duration }

// ParseDelay reads "MIN-MAX" (such as "300us-200ms") or "" (none).
func ParseDelay(s string) (Delay, error) {
	if s == "" {
		return Delay{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := time.ParseDuration(a)
	hi, err2 := time.ParseDuration(b)
	if !ok || err1 != nil || err2 != nil || lo <= 0 || hi < lo {
		return Delay{}, fmt.Errorf("chaos: delay %q: want MIN-MAX such as 300us-200ms", s)
	}
	return Delay{lo, hi}, nil
}

func (d Delay) String() string {
	if d.Max == 0 {
		return ""
	}
	return d.Min.String() + "-" + d.Max.String()
}

// For is how long the handler waits for the signal k. The hostile node's
// signals (HostileSource) take no time: the slow handler is the
// workload's. Its flood, once given up on and delivered (2,000 signals),
// would otherwise stand between a slow handler and the probes for minutes
// (seed 11008): what a member that publishes thousands of deliverable
// signals does to a slow consumer is a limit of its own (no per-origin
// rate limit), not what the schedule checks.
func (d Delay) For(k Key) time.Duration {
	if d.Max == 0 || k.Source == HostileSource {
		return 0
	}
	h := sha256.Sum256([]byte(k.String()))
	u := float64(binary.BigEndian.Uint64(h[:8])>>11) / (1 << 53)
	return time.Duration(float64(d.Min) * math.Pow(float64(d.Max)/float64(d.Min), u))
}

// OpenRecorder opens (or creates) the record at path, drops a torn last
// line left by a crash, and appends a Start line.
func OpenRecorder(path string, delay Delay) (*Recorder, error) {
	entries, valid, err := readRecord(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: record: %w", err)
	}
	if err := f.Truncate(valid); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: record: %w", err)
	}
	if _, err := f.Seek(valid, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: record: %w", err)
	}
	r := &Recorder{f: f, seen: map[Key]bool{}, delay: delay}
	for _, e := range entries {
		if e.ID != "" {
			r.seen[e.Key()] = true
		}
	}
	if err := r.write(Entry{Start: true}); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Handle records s, after the Delay for it; it is a node.Handler.
func (r *Recorder) Handle(ctx context.Context, s *signalmesh.Signal) error {
	k := Key{s.Source, s.ID}
	if d := r.delay.For(k); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	str := func(name string) string { v, _ := s.Extensions[name].(string); return v }
	e := Entry{Source: s.Source, ID: s.ID, Type: s.Type, Cause: s.CauseID(), Again: r.seen[k],
		Peer: str(signalmesh.ExtPeer), Clock: str("meshclock"), Causal: str(ExtCausal), Sum: DataSum(s.Data)}
	if err := r.write(e); err != nil {
		return err // the subscription retries
	}
	r.seen[k] = true
	return nil
}

// ExtCausal is the extension of the bounded causal metadata
// ("<seq>/<lamport>/<deps>"), which replaced meshclock (still read, for
// records of older nodes).
const ExtCausal = signalmesh.ExtCausal

func (r *Recorder) write(e Entry) error {
	e.T = time.Now().UnixNano()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := r.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("chaos: record: %w", err)
	}
	return nil
}

// Close syncs and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.f.Sync(), r.f.Close())
}

// ReadRecord reads a record file; a torn last line (no newline) is ignored.
func ReadRecord(path string) ([]Entry, error) {
	e, _, err := readRecord(path)
	return e, err
}

// readRecord also returns the length of the whole lines.
func readRecord(path string) ([]Entry, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var out []Entry
	var valid int64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if int(valid)+len(line) >= len(b) { // no newline after it: torn
			break
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return out, valid, fmt.Errorf("chaos: record %s: line %d: %w", path, len(out)+1, err)
		}
		out = append(out, e)
		valid += int64(len(line)) + 1
	}
	return out, valid, sc.Err()
}
