package node

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/signalmesh/signalmesh/vclock"
)

// cursorLog makes a named subscription's cursor survive kill -9 without an
// fsync per signal: each advance is one write(2) to an append-only file,
// which the kernel keeps when the process dies (a store write may still sit
// in the store's own buffer then), and the whole cursor goes to the store,
// synced, with the log emptied, every cursorCheckpoint advances and when the
// subscription closes. A power loss can still lose the last advances: the
// subscription is at least once across a crash. Only the subscription's
// run goroutine uses it.
type cursorLog struct {
	path string
	f    *os.File
	n    int // advances since the last checkpoint
	once sync.Once
	err  error
}

const cursorCheckpoint = 4096

// openCursorLog opens (or creates) the log of subscription name of mesh
// under dir and returns the advances it holds (a torn last line, from a
// crash in the middle of a write, is ignored).
func openCursorLog(dir, mesh, name string) (*cursorLog, vclock.Clock, error) {
	var c vclock.Clock
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		return nil, c, fmt.Errorf("node: cursor log: %w", err)
	}
	path := filepath.Join(dir, "cursors", mesh+"-"+name+".log")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, c, fmt.Errorf("node: cursor log: %w", err)
	}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		origin, num, ok := strings.Cut(sc.Text(), " ")
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil || origin == "" {
			continue
		}
		c = c.Set(origin, max(c.Get(origin), seq))
		n++
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, c, fmt.Errorf("node: cursor log: %w", err)
	}
	return &cursorLog{path: path, f: f, n: n}, c, nil
}

// add records that the subscription handled origin's seq.
func (l *cursorLog) add(origin string, seq uint64) error {
	_, err := l.f.WriteString(origin + " " + strconv.FormatUint(seq, 10) + "\n")
	l.n++
	return err
}

// reset empties the log: the store holds the whole cursor now, synced.
func (l *cursorLog) reset() error {
	l.n = 0
	return l.f.Truncate(0)
}

// close closes the file; idempotent (the subscription's Close and the
// node's may both call it, once the run goroutine has stopped).
func (l *cursorLog) close() error {
	l.once.Do(func() { l.err = l.f.Close() })
	return l.err
}

// remove closes and deletes the log (the store holds the cursor, synced).
func (l *cursorLog) remove() error {
	return errors.Join(l.close(), os.Remove(l.path))
}
