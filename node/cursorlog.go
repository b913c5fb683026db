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
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/vclock"
)

// cursorLog makes a named subscription's cursor survive kill -9 without an
// fsync per signal: it is an append-only file of lines, each written with
// write(2), which the kernel keeps when the process dies (a store write may
// still sit in the store's own buffer then), and the whole cursor goes to
// the store, synced, with the log emptied, every cursorCheckpoint advances
// and when the subscription closes. A power loss can still lose the last
// lines: the subscription is at least once across a crash. Only the
// subscription's run goroutine uses it.
//
// Two kinds of line. An advance, "origin seq hash" (before the identity
// set, "origin seq"), says that the subscription handled the signal at
// (origin, seq) with identity hash hash (origin "-": a Weak signal, which
// has no place). A hand-over, "> origin seq hash", is written before the
// handler is called, so that after a crash the subscription knows which
// signals the last process handed over without recording them as handled
// (its handler may have done their work): it hands those over again first,
// before anything new (see Node.handedBefore). Older versions skip the
// hand-over lines (four fields) as torn.
//
// Cost: one write(2) per signal handed over, as before the hand-over
// lines. An advance is not written on its own: it waits in buf and goes in
// the same write as the next hand-over line, or when the subscription has
// nothing more to handle (flush), or past flushAt bytes. A crash between
// a handler's return and that write hands its signal over again first
// after the restart, as a crash between the handler and the advance did.
type cursorLog struct {
	path string
	f    *os.File
	n    int        // advances since the last checkpoint
	buf  []byte     // lines not written yet: advances
	open []handover // handed over, not recorded as handled, oldest first
	once sync.Once
	err  error
}

// handover is the signal of a line: its place (origin "-" and seq 0 for a
// Weak signal) and identity hash (see handledSet).
type handover struct {
	origin string
	seq    uint64
	id     uint64
}

const (
	cursorCheckpoint = 4096
	flushAt          = 4096 // bytes of advances held back at most
)

// openCursorLog opens (or creates) the log of subscription name of mesh
// under dir and returns the advances it holds, the identity hashes of the
// signals they name (see handledSet), and the signals handed over and not
// recorded as handled, in the order they were handed over (a torn last
// line, from a crash in the middle of a write, is ignored).
func openCursorLog(dir, mesh, name string) (*cursorLog, vclock.Clock, []uint64, []handover, error) {
	var c vclock.Clock
	fail := func(err error) (*cursorLog, vclock.Clock, []uint64, []handover, error) {
		return nil, c, nil, nil, fmt.Errorf("node: cursor log: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		return fail(err)
	}
	path := filepath.Join(dir, "cursors", mesh+"-"+name+".log")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	l := &cursorLog{path: path, f: f}
	var ids []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[0] == ">" { // "> origin seq hash"
			if h, ok := parseHandover(fields[1:]); ok && len(fields) == 4 {
				l.open = append(l.open, h)
			}
			continue // or a torn one
		}
		h, ok := parseHandover(fields)
		if !ok {
			continue // a torn line
		}
		if len(fields) == 3 {
			ids = append(ids, h.id)
			l.confirm(h.id)
		}
		if h.origin != "-" { // "-": a Weak signal handled (no place)
			c = c.Set(h.origin, max(c.Get(h.origin), h.seq))
		}
		l.n++
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return fail(err)
	}
	if err := cutTornTail(f); err != nil { // the next write must start a line of its own
		f.Close()
		return fail(err)
	}
	return l, c, ids, slices.Clone(l.open), nil
}

// parseHandover parses "origin seq" or "origin seq hash" (16 hex digits).
func parseHandover(fields []string) (handover, bool) {
	if len(fields) < 2 || len(fields) > 3 {
		return handover{}, false
	}
	seq, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return handover{}, false
	}
	h := handover{origin: fields[0], seq: seq}
	if len(fields) == 3 {
		if h.id, err = strconv.ParseUint(fields[2], 16, 64); err != nil || len(fields[2]) != 16 {
			return handover{}, false
		}
	}
	return h, true
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

// handing records that the subscription hands h over to its handler:
// what waits in buf and the hand-over line, in one write, before the
// handler is called.
func (l *cursorLog) handing(h handover) error {
	l.buf = appendLine(append(l.buf, "> "...), h)
	l.open = append(l.open, h)
	return l.flush()
}

// add records that the subscription handled h (or passed over it, another
// copy of an event it handled): the line waits for the next write.
func (l *cursorLog) add(h handover) error {
	l.buf = appendLine(l.buf, h)
	l.confirm(h.id)
	l.n++
	if len(l.buf) >= flushAt {
		return l.flush()
	}
	return nil
}

// flush writes what waits in buf.
func (l *cursorLog) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.f.Write(l.buf)
	l.buf = l.buf[:0]
	return err
}

// confirm drops the hand-overs of the event id from open: it is handled.
func (l *cursorLog) confirm(id uint64) {
	l.open = slices.DeleteFunc(l.open, func(h handover) bool { return h.id == id })
}

func appendLine(b []byte, h handover) []byte {
	return fmt.Appendf(b, "%s %d %016x\n", h.origin, h.seq, h.id)
}

// reset empties the log: the store holds the whole cursor now, synced.
// What was handed over and is not handled yet (a handler cut short by
// Close, a signal the last process handed over that this one could not
// read) stays in it.
func (l *cursorLog) reset() error {
	l.n = 0
	l.buf = l.buf[:0]
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	for _, h := range l.open {
		l.buf = appendLine(append(l.buf, "> "...), h)
	}
	return l.flush()
}

// close writes what waits in buf and closes the file; idempotent (the
// subscription's Close and the node's may both call it, once the run
// goroutine has stopped).
func (l *cursorLog) close() error {
	l.once.Do(func() { l.err = errors.Join(l.flush(), l.f.Close()) })
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
