package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
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
//
// Each line is "origin seq" and, since the identity set, " hash": the
// identity hash of the signal handled (see handledSet), returned in ids.
func openCursorLog(dir, mesh, name string) (*cursorLog, vclock.Clock, []uint64, error) {
	var c vclock.Clock
	var ids []uint64
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		return nil, c, nil, fmt.Errorf("node: cursor log: %w", err)
	}
	path := filepath.Join(dir, "cursors", mesh+"-"+name+".log")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, c, nil, fmt.Errorf("node: cursor log: %w", err)
	}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || len(fields) > 3 {
			continue // a torn line
		}
		seq, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) == 3 {
			h, err := strconv.ParseUint(fields[2], 16, 64)
			if err != nil || len(fields[2]) != 16 {
				continue
			}
			ids = append(ids, h)
		}
		if fields[0] != "-" { // "-": a Weak signal handled (no place)
			c = c.Set(fields[0], max(c.Get(fields[0]), seq))
		}
		n++
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, c, nil, fmt.Errorf("node: cursor log: %w", err)
	}
	if err := cutTornTail(f); err != nil { // the next advance must start a line of its own
		f.Close()
		return nil, c, nil, fmt.Errorf("node: cursor log: %w", err)
	}
	return &cursorLog{path: path, f: f, n: n}, c, ids, nil
}

// cutTornTail truncates f after its last newline: a line a crash tore
// is dropped (it was ignored), not continued by the next write.
func cutTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	size := st.Size()
	buf := make([]byte, min(size, 4096))
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && n < int(end-start) {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			if cut := start + int64(i) + 1; cut < size {
				return f.Truncate(cut)
			}
			return nil
		}
		end = start
	}
	return f.Truncate(0)
}

// add records that the subscription handled origin's seq, a signal with
// identity hash id.
func (l *cursorLog) add(origin string, seq, id uint64) error {
	_, err := fmt.Fprintf(l.f, "%s %d %016x\n", origin, seq, id)
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

// handledSet is the identity hashes of the last signals a named
// subscription handled (handledSize of them). A copy of an event it
// handled, published again elsewhere (a retry on another peer) and met
// after a restart, before the node knows the first copy, is not handed
// over again: the set survives restarts (the cursor log's lines, and the
// store at each checkpoint).
type handledSet struct {
	ids  map[uint64]bool
	ring []uint64
	next int
}

const handledSize = 4096

func newHandledSet(ids []uint64) *handledSet {
	h := &handledSet{ids: make(map[uint64]bool, handledSize), ring: make([]uint64, handledSize)}
	for _, id := range ids {
		h.add(id)
	}
	return h
}

func (h *handledSet) has(id uint64) bool { return h.ids[id] }

func (h *handledSet) add(id uint64) {
	if h.ids[id] {
		return
	}
	if old := h.ring[h.next]; old != 0 {
		delete(h.ids, old)
	}
	h.ring[h.next] = id
	h.next = (h.next + 1) % len(h.ring)
	h.ids[id] = true
}

// marshal is the set, oldest first, 8 bytes an id.
func (h *handledSet) marshal() []byte {
	out := make([]byte, 0, 8*len(h.ids))
	for i := range h.ring {
		if id := h.ring[(h.next+i)%len(h.ring)]; id != 0 {
			out = binary.BigEndian.AppendUint64(out, id)
		}
	}
	return out
}

func unmarshalHandled(b []byte) []uint64 {
	var ids []uint64
	for ; len(b) >= 8; b = b[8:] {
		ids = append(ids, binary.BigEndian.Uint64(b))
	}
	return ids
}

// identityHash is a stable 64-bit hash of a signal's (source, id, content
// digest): its identity as an event, the same for every copy.
func identityHash(s *signalmesh.Signal) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s.Source))
	h.Write([]byte{0})
	h.Write([]byte(s.ID))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint64(nil, journal.ContentDigest(s)))
	return max(h.Sum64(), 1) // 0 marks an empty ring slot
}
