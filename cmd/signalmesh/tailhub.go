package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// tailHistory is how many delivered signals the daemon keeps for its
// server-sent event streams: a stream that reconnects within that many
// signals resumes where it left off; a reader further behind is told how
// many it lost.
const tailHistory = 4096

// tailHub numbers the signals the node delivers (1, 2, ...) and keeps the
// last tailHistory of them for the API's /v1/tail streams. Each event id
// is "<epoch>.<number>", epoch naming this daemon process, so that a
// client reconnecting with Last-Event-ID resumes after the event it last
// saw. It subscribes to "**" on the first stream, not before, and stays
// subscribed until close, so that reconnecting streams find what was
// delivered meanwhile.
type tailHub struct {
	n     *node.Node
	epoch string

	subMu sync.Mutex // held while subscribing: not mu, which the handler takes
	sub   *node.Subscription

	mu   sync.Mutex
	ring [tailHistory]*signalmesh.Signal // signal k at ring[(k-1)%tailHistory]
	next uint64                          // number of the next signal
	wake chan struct{}                   // closed at the next signal
}

func newTailHub(n *node.Node) *tailHub {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &tailHub{n: n, epoch: hex.EncodeToString(b), next: 1, wake: make(chan struct{})}
}

// start subscribes the hub, once.
func (h *tailHub) start() error {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	if h.sub != nil {
		return nil
	}
	sub, err := h.n.Subscribe("**", h.add, node.WithLocal()) // short-lived: not in the mesh-wide set
	if err != nil {
		return err
	}
	h.sub = sub
	return nil
}

func (h *tailHub) close() error {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	if h.sub == nil {
		return nil
	}
	return h.sub.Close()
}

func (h *tailHub) add(_ context.Context, s *signalmesh.Signal) error {
	h.mu.Lock()
	h.ring[(h.next-1)%tailHistory] = s
	h.next++
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	return nil
}

func (h *tailHub) id(k uint64) string { return h.epoch + "." + strconv.FormatUint(k, 10) }

// resume is the number a stream starts at: after lastEventID when it is
// one of this process's ids, at the next signal when there is none, and
// at this process's first signal (known false) for an id of another
// process (the daemon restarted) or one it cannot read.
func (h *tailHub) resume(lastEventID string) (from uint64, known bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if lastEventID == "" {
		return h.next, true
	}
	epoch, num, _ := strings.Cut(lastEventID, ".")
	k, err := strconv.ParseUint(num, 10, 64)
	if epoch != h.epoch || err != nil || k >= h.next {
		return 1, false
	}
	return k + 1, true
}

// read returns up to limit signals numbered from `from` on, the number
// after them, how many before them are no longer held (lost), and a
// channel closed when the next signal comes.
func (h *tailHub) read(from uint64, limit int) (sigs []*signalmesh.Signal, first uint64, lost uint64, wake <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	oldest := uint64(1)
	if h.next > tailHistory {
		oldest = h.next - tailHistory
	}
	if from < oldest {
		lost, from = oldest-from, oldest
	}
	for k := from; k < h.next && len(sigs) < limit; k++ {
		sigs = append(sigs, h.ring[(k-1)%tailHistory])
	}
	return sigs, from, lost, h.wake
}
