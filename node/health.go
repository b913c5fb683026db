package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// Health is what a health check needs of a node.
type Health struct {
	// Store is the error of a small write to the node's store (nil: it
	// is writable).
	Store error
	// Loop is nil when the node's loop, which delivers every signal,
	// answered within the check's time (2 s at most).
	Loop error
	// Stuck is how long signals have waited in the causal buffer, when
	// longer than Params.CauseTimeout (0 otherwise): a cause or a
	// dependency that does not come.
	Stuck time.Duration
	// Peers is the number of connected peers (readiness, not health: a
	// node alone still publishes and delivers locally).
	Peers int
}

// OK reports whether the node is healthy: its store takes writes, its
// loop answers, and nothing has waited past CauseTimeout.
func (h Health) OK() bool { return h.Store == nil && h.Loop == nil && h.Stuck == 0 }

// String says what is wrong, or "ok".
func (h Health) String() string {
	if h.OK() {
		return "ok"
	}
	var out []string
	if h.Store != nil {
		out = append(out, "store: "+h.Store.Error())
	}
	if h.Loop != nil {
		out = append(out, "loop: "+h.Loop.Error())
	}
	if h.Stuck > 0 {
		out = append(out, fmt.Sprintf("causal buffer waiting for %v", h.Stuck.Round(time.Second)))
	}
	return strings.Join(out, "; ")
}

// Health checks the node: a write to its store, a round trip through its
// loop (bounded by ctx and 2 s), and how long signals have waited.
func (n *Node) Health(ctx context.Context) Health {
	h := Health{Peers: len(n.Peers())}
	if n.ctx.Err() != nil {
		return Health{Store: ErrClosed, Loop: ErrClosed}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/health")
	h.Store = n.store.Put(ctx, key, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	var since time.Time
	var buffered int
	h.Loop = n.do(ctx, func() { since, buffered = n.waitingSince, n.core.Len() })
	if errors.Is(h.Loop, context.DeadlineExceeded) {
		h.Loop = errors.New("no answer within 2 s")
	}
	if h.Loop == nil && buffered > 0 && !since.IsZero() {
		if d := time.Since(since); d > n.p.CauseTimeout {
			h.Stuck = d
		}
	}
	return h
}
