package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/signalmesh/signalmesh"
)

// Entry is one line of a delivery record: either the mark of a process
// start (Start), or one delivery to the recording subscription.
type Entry struct {
	// Start marks that a node process (re)started: the deliveries after it
	// are that process's.
	Start bool   `json:"start,omitempty"`
	ID    string `json:"id,omitempty"`
	Type  string `json:"type,omitempty"`
	Cause string `json:"cause,omitempty"`
	// Again marks a delivery of an id this record already holds: the
	// subscription handed the signal over twice. A persistent subscription
	// is at least once across a crash (its cursor is saved after each
	// signal), so this may follow a kill -9 and nothing else; the checker
	// says which.
	Again bool `json:"again,omitempty"`
}

// Recorder appends what a persistent subscription delivers to a file, one
// JSON line per delivery, each line one write(2), so that a process killed
// with SIGKILL loses no line it has returned from (the kernel keeps the
// write). It is an idempotent consumer: an id it holds already is written
// again only as an Again line. Its Handle method is safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	f    *os.File
	seen map[string]bool
}

// OpenRecorder opens (or creates) the record at path, drops a torn last
// line left by a crash, and appends a Start line.
func OpenRecorder(path string) (*Recorder, error) {
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
	r := &Recorder{f: f, seen: map[string]bool{}}
	for _, e := range entries {
		if e.ID != "" {
			r.seen[e.ID] = true
		}
	}
	if err := r.write(Entry{Start: true}); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Handle records s; it is a node.Handler.
func (r *Recorder) Handle(_ context.Context, s *signalmesh.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := Entry{ID: s.ID, Type: s.Type, Cause: s.CauseID(), Again: r.seen[s.ID]}
	if err := r.write(e); err != nil {
		return err // the subscription retries
	}
	r.seen[s.ID] = true
	return nil
}

func (r *Recorder) write(e Entry) error {
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
