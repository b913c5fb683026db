package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/router"
)

// DeadLetterType is the type of the signal the egress publishes into the
// mesh when it gives up on a signal for a destination. Its data (JSON)
// names the destination, its URL, the signal and its type, the attempts,
// the last HTTP status (0 when none came back) and the error; its causeid
// is the signal.
const DeadLetterType = "signalmesh.bridge.deadletter"

// Destination is where the egress sends the signals matching Patterns.
type Destination struct {
	// Name is unique among an egress's destinations; it names the
	// destination's durable cursors and outbox, so keep it across restarts.
	Name string
	URL  string
	// Mode of the requests; default Structured. Batch sends up to
	// BatchSize queued signals per request.
	Mode      Mode
	BatchSize int
	// Patterns select the signals (router patterns); at least one.
	Patterns []string
	// Token is sent as Authorization: Bearer. Secret signs every request
	// (SignatureHeader); Webhook mode requires it.
	Token  string
	Secret []byte
	// Cluster, when the destination is another cluster's ingress, is that
	// cluster's name: signals that originated there are never sent back.
	Cluster string
	// Timeout of one request. Default 10 s.
	Timeout time.Duration
	Retry   Retry
	Breaker Breaker
}

// Retry is how long a signal is retried: Attempts requests (default 10; a
// negative value retries forever), waiting Backoff before the second
// (default 200 ms), doubling up to MaxBackoff (default 30 s), each wait
// ±20 % jitter. While the breaker is open no attempt is spent. Answers 4xx
// other than 408 and 429 are not retried. A 429 or 503 answer with a
// Retry-After header (seconds or an HTTP date) waits that long instead of
// the backoff, at most 5 minutes, and at least the backoff.
type Retry struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Breaker is a destination's circuit breaker. Closed, it lets requests
// through and counts consecutive failures; at Failures (default 5) it
// opens: no request for OpenFor (default 10 s). Then it is half-open: one
// request goes; success closes it, failure opens it again for OpenFor.
type Breaker struct {
	Failures int
	OpenFor  time.Duration
}

// EgressConfig configures an Egress.
type EgressConfig struct {
	// Cluster names this cluster; it is stamped on signals that leave
	// without one (ExtCluster). Required.
	Cluster string
	// Store holds the destinations' outboxes: signals taken from the mesh
	// and not yet delivered. Use an on-disk store (the daemon uses pebble
	// under the node's DataDir) for delivery that survives restarts.
	// Required.
	Store ds.Batching
	// Destinations; names unique.
	Destinations []Destination
	// Client for the requests; default http.DefaultClient's transport with
	// each Destination's Timeout.
	Client *http.Client
	// OutboxLimit bounds each destination's outbox. Default 1,000,000. When
	// full, the destination's subscriptions wait (the node queues their
	// signals, up to its SubscriberQueue, and counts what it drops).
	OutboxLimit int
	// MaxHops: signals that crossed this many bridges are not sent on.
	// Default 8.
	MaxHops int
	Logger  *slog.Logger
}

// Egress delivers signals from a mesh to HTTP destinations, at least once:
// a durable subscription per destination and pattern moves matching
// signals into the destination's outbox in the Store, and a sender per
// destination delivers the outbox in order, with retries, backoff and a
// circuit breaker; after the last attempt it publishes a DeadLetterType
// signal and goes on. A restart resumes where it stopped: the
// subscriptions' cursors and the outboxes are durable.
type Egress struct {
	cfg   EgressConfig
	n     *node.Node
	log   *slog.Logger
	dests []*dest

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type dest struct {
	Destination
	e    *Egress
	subs []*node.Subscription

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the outbox changes or the egress stops
	queue   []uint64   // outbox sequence numbers, oldest first
	next    uint64
	stats   DestStats
	stopped bool
}

// DestStats counts what a destination's egress did.
type DestStats struct {
	Queued       int    `json:"queued"` // in the outbox now
	Sent         int64  `json:"sent"`
	Failures     int64  `json:"failures"`      // failed requests
	DeadLettered int64  `json:"dead_lettered"` // signals given up on
	Skipped      int64  `json:"skipped"`       // not sent: from the destination's cluster, or over MaxHops
	Breaker      string `json:"breaker"`       // closed, open, half-open
}

// NewEgress starts delivering from n to cfg.Destinations.
func NewEgress(n *node.Node, cfg EgressConfig) (*Egress, error) {
	if cfg.Cluster == "" || cfg.Store == nil {
		return nil, errors.New("bridge: EgressConfig needs Cluster and Store")
	}
	if cfg.OutboxLimit <= 0 {
		cfg.OutboxLimit = 1_000_000
	}
	if cfg.MaxHops <= 0 {
		cfg.MaxHops = 8
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Egress{cfg: cfg, n: n, log: log, ctx: ctx, cancel: cancel}
	seen := map[string]bool{}
	for _, d := range cfg.Destinations {
		if err := d.check(); err != nil {
			cancel()
			return nil, err
		}
		if seen[d.Name] {
			cancel()
			return nil, fmt.Errorf("bridge: two destinations named %q", d.Name)
		}
		seen[d.Name] = true
		d.defaults()
		dd := &dest{Destination: d, e: e, stats: DestStats{Breaker: "closed"}}
		dd.cond = sync.NewCond(&dd.mu)
		if err := dd.load(ctx); err != nil {
			cancel()
			return nil, err
		}
		e.dests = append(e.dests, dd)
	}
	for _, d := range e.dests {
		for i, p := range d.Patterns {
			sub, err := n.Subscribe(p, d.take, node.WithName(fmt.Sprintf("bridge.%s.%d", d.Name, i)),
				node.WithRetry(node.Retry{Attempts: 1, NoDeadLetter: true}), node.WithoutTruncationNotice())
			if err != nil {
				_ = e.Close()
				return nil, fmt.Errorf("bridge: destination %s: %w", d.Name, err)
			}
			d.subs = append(d.subs, sub)
		}
		e.wg.Add(1)
		go d.send()
	}
	return e, nil
}

func (d *Destination) check() error {
	if d.Name == "" || strings.ContainsAny(d.Name, "/ ") {
		return fmt.Errorf("bridge: destination name %q: want a non-empty name without '/' or spaces", d.Name)
	}
	if !strings.HasPrefix(d.URL, "http://") && !strings.HasPrefix(d.URL, "https://") {
		return fmt.Errorf("bridge: destination %s: URL %q is not http(s)", d.Name, d.URL)
	}
	switch d.Mode {
	case "", Structured, Binary, Batch:
	case Webhook:
		if len(d.Secret) == 0 {
			return fmt.Errorf("bridge: destination %s: webhook mode needs a Secret", d.Name)
		}
	default:
		return fmt.Errorf("bridge: destination %s: unknown mode %q", d.Name, d.Mode)
	}
	if len(d.Patterns) == 0 {
		return fmt.Errorf("bridge: destination %s: no patterns", d.Name)
	}
	for _, p := range d.Patterns {
		if err := router.Validate(p); err != nil {
			return fmt.Errorf("bridge: destination %s: %w", d.Name, err)
		}
	}
	return nil
}

func (d *Destination) defaults() {
	if d.Mode == "" {
		d.Mode = Structured
	}
	if d.BatchSize <= 0 {
		d.BatchSize = 100
	}
	if d.Timeout <= 0 {
		d.Timeout = 10 * time.Second
	}
	if d.Retry.Attempts == 0 {
		d.Retry.Attempts = 10
	}
	if d.Retry.Backoff <= 0 {
		d.Retry.Backoff = 200 * time.Millisecond
	}
	if d.Retry.MaxBackoff < d.Retry.Backoff {
		d.Retry.MaxBackoff = max(30*time.Second, d.Retry.Backoff)
	}
	if d.Breaker.Failures <= 0 {
		d.Breaker.Failures = 5
	}
	if d.Breaker.OpenFor <= 0 {
		d.Breaker.OpenFor = 10 * time.Second
	}
}

func (d *dest) key(seq uint64) ds.Key {
	return ds.NewKey(fmt.Sprintf("/signalmesh/bridge/%s/%020d", d.Name, seq))
}

// load reads what the outbox kept from the last run.
func (d *dest) load(ctx context.Context) error {
	res, err := d.e.cfg.Store.Query(ctx, query.Query{Prefix: "/signalmesh/bridge/" + d.Name, KeysOnly: true,
		Orders: []query.Order{query.OrderByKey{}}})
	if err != nil {
		return err
	}
	all, err := res.Rest()
	if err != nil {
		return err
	}
	for _, r := range all {
		seq, err := strconv.ParseUint(ds.RawKey(r.Key).BaseNamespace(), 10, 64)
		if err != nil {
			continue
		}
		d.queue = append(d.queue, seq)
		d.next = max(d.next, seq+1)
	}
	return nil
}

// take is the subscriptions' handler: it moves a signal into the outbox,
// durably, so that the subscription's cursor may move past it.
func (d *dest) take(ctx context.Context, s *signalmesh.Signal) error {
	origin, _ := s.Extensions[ExtCluster].(string)
	if (d.Cluster != "" && origin == d.Cluster) || Hops(s) >= d.e.cfg.MaxHops {
		d.mu.Lock()
		d.stats.Skipped++
		d.mu.Unlock()
		return nil
	}
	out := s.Clone()
	// The peer and clock stamps belong to this mesh; the receiving mesh
	// stamps its own.
	delete(out.Extensions, signalmesh.ExtPeer)
	delete(out.Extensions, signalmesh.ExtCausal)
	delete(out.Extensions, signalmesh.ExtSig)
	if origin == "" {
		_ = out.SetExtension(ExtCluster, d.e.cfg.Cluster)
	}
	_ = out.SetExtension(ExtHops, Hops(s)+1)
	b, err := out.MarshalBinary()
	if err != nil {
		return err
	}
	d.mu.Lock()
	// A full outbox holds the subscription back. When the egress stops, the
	// signal in hand goes in anyway, over the limit: a handler that failed
	// would let the subscription's cursor move past it.
	for len(d.queue) >= d.e.cfg.OutboxLimit && !d.stopped {
		d.cond.Wait()
	}
	seq := d.next
	d.next++
	d.mu.Unlock()
	st := d.e.cfg.Store
	if err := st.Put(ctx, d.key(seq), b); err != nil {
		return err
	}
	if err := st.Sync(ctx, d.key(seq)); err != nil {
		return err
	}
	d.mu.Lock()
	d.queue = append(d.queue, seq)
	d.cond.Broadcast()
	d.mu.Unlock()
	return nil
}

// send delivers the outbox in order until the egress closes.
func (d *dest) send() {
	defer d.e.wg.Done()
	br := &breaker{cfg: d.Breaker}
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.stopped {
			d.cond.Wait()
		}
		if d.stopped {
			d.mu.Unlock()
			return
		}
		n := 1
		if d.Mode == Batch {
			n = min(len(d.queue), d.BatchSize)
		}
		seqs := append([]uint64(nil), d.queue[:n]...)
		d.mu.Unlock()
		sigs := make([]*signalmesh.Signal, 0, n)
		for _, seq := range seqs {
			b, err := d.e.cfg.Store.Get(d.e.ctx, d.key(seq))
			if err == nil {
				var s *signalmesh.Signal
				if s, err = signalmesh.DecodeBinary(b, signalmesh.Limits{}); err == nil {
					sigs = append(sigs, s)
					continue
				}
			}
			if d.e.ctx.Err() != nil {
				return
			}
			d.e.log.Error("bridge: unreadable outbox entry dropped", "destination", d.Name, "seq", seq, "err", err)
		}
		if len(sigs) > 0 {
			if !d.deliver(br, sigs) {
				return // stopped
			}
		}
		if err := d.remove(seqs); err != nil {
			if d.e.ctx.Err() != nil {
				return
			}
			d.e.log.Error("bridge: outbox", "destination", d.Name, "err", err)
		}
	}
}

func (d *dest) remove(seqs []uint64) error {
	b, err := d.e.cfg.Store.Batch(d.e.ctx)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if err := b.Delete(d.e.ctx, d.key(seq)); err != nil {
			return err
		}
	}
	if err := b.Commit(d.e.ctx); err != nil {
		return err
	}
	d.mu.Lock()
	d.queue = d.queue[len(seqs):]
	d.cond.Broadcast()
	d.mu.Unlock()
	return nil
}

// deliver sends sigs until it succeeds, the answer says not to retry, or
// the attempts run out (then it dead-letters them). It reports false when
// the egress stopped first.
func (d *dest) deliver(br *breaker, sigs []*signalmesh.Signal) bool {
	backoff := d.Retry.Backoff
	var status int
	var err error
	for attempt := 1; ; attempt++ {
		if wait := br.wait(time.Now()); wait > 0 {
			d.setBreaker(br)
			if !d.sleep(wait) {
				return false
			}
		}
		var after time.Duration
		status, after, err = d.post(sigs)
		if err == nil {
			br.success()
			d.mu.Lock()
			d.stats.Sent += int64(len(sigs))
			d.mu.Unlock()
			d.setBreaker(br)
			return true
		}
		if d.e.ctx.Err() != nil {
			return false
		}
		br.failure(time.Now())
		d.mu.Lock()
		d.stats.Failures++
		d.mu.Unlock()
		d.setBreaker(br)
		permanent := status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
		if permanent || (d.Retry.Attempts > 0 && attempt >= d.Retry.Attempts) {
			d.deadLetter(sigs, attempt, status, err)
			return true
		}
		if !d.sleep(max(jitter(backoff), after)) {
			return false
		}
		backoff = min(2*backoff, d.Retry.MaxBackoff)
	}
}

func (d *dest) setBreaker(br *breaker) {
	st := br.state(time.Now())
	d.mu.Lock()
	d.stats.Breaker = st
	d.mu.Unlock()
}

func (d *dest) sleep(t time.Duration) bool {
	timer := time.NewTimer(t)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-d.e.ctx.Done():
		return false
	}
}

// post sends one request. It returns the answer's status and, for a 429
// or 503, how long its Retry-After asks to wait (0 without one).
func (d *dest) post(sigs []*signalmesh.Signal) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(d.e.ctx, d.Timeout)
	defer cancel()
	req, err := NewRequest(ctx, d.URL, d.Mode, sigs, d.Secret)
	if err != nil {
		return 0, 0, err
	}
	if d.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	resp, err := d.e.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		var after time.Duration
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			after = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return resp.StatusCode, after, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.StatusCode, 0, nil
}

// maxRetryAfter bounds the wait a destination's Retry-After can ask for.
const maxRetryAfter = 5 * time.Minute

// retryAfter reads a Retry-After header (RFC 9110 10.2.3): delay seconds
// or an HTTP date, relative to now. It is 0 when absent or unreadable, and
// at most maxRetryAfter.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(h, 10, 32); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

func (d *dest) deadLetter(sigs []*signalmesh.Signal, attempts, status int, cause error) {
	for _, s := range sigs {
		dl, err := signalmesh.New(DeadLetterType, "/signalmesh/bridge/"+d.Name, map[string]any{
			"destination": d.Name, "url": d.URL, "signal": s.ID, "type": s.Type,
			"attempts": attempts, "status": status, "error": cause.Error(),
		}, signalmesh.WithCauseID(s.ID), signalmesh.WithSubject(s.Type))
		if err == nil {
			err = d.e.n.Publish(d.e.ctx, dl)
		}
		if err != nil {
			d.e.log.Error("bridge: publish dead letter", "destination", d.Name, "signal", s.ID, "err", err)
		}
		d.e.log.Warn("bridge: gave up on a signal", "destination", d.Name, "signal", s.ID, "attempts", attempts, "status", status, "err", cause)
	}
	d.mu.Lock()
	d.stats.DeadLettered += int64(len(sigs))
	d.mu.Unlock()
}

// Stats returns each destination's counts, by name.
func (e *Egress) Stats() map[string]DestStats {
	out := map[string]DestStats{}
	for _, d := range e.dests {
		d.mu.Lock()
		st := d.stats
		st.Queued = len(d.queue)
		d.mu.Unlock()
		out[d.Name] = st
	}
	return out
}

// Close stops the subscriptions and the senders. What is in the outboxes
// stays there for the next start; a request in flight is abandoned and
// sent again then (at least once).
func (e *Egress) Close() error {
	for _, d := range e.dests {
		d.mu.Lock()
		d.stopped = true
		d.cond.Broadcast()
		d.mu.Unlock()
	}
	var errs []error
	for _, d := range e.dests {
		for _, s := range d.subs {
			errs = append(errs, s.Close())
		}
	}
	e.cancel()
	e.wg.Wait()
	return errors.Join(errs...)
}

// breaker is the circuit breaker of one destination (see Breaker); only its
// sender uses it.
type breaker struct {
	cfg      Breaker
	failures int
	openTill time.Time
	open     bool
}

// wait is how long to wait before the next request.
func (b *breaker) wait(now time.Time) time.Duration {
	if !b.open {
		return 0
	}
	return max(0, b.openTill.Sub(now))
}

func (b *breaker) success() { b.failures, b.open = 0, false }

func (b *breaker) failure(now time.Time) {
	b.failures++
	if b.open || b.failures >= b.cfg.Failures { // a half-open trial failed, or too many in a row
		b.open, b.openTill = true, now.Add(b.cfg.OpenFor)
	}
}

func (b *breaker) state(now time.Time) string {
	switch {
	case !b.open:
		return "closed"
	case now.Before(b.openTill):
		return "open"
	}
	return "half-open"
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + rand.N(2*d/5+1)
}
