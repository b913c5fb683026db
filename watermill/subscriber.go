package watermill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// ErrGroupBusy is returned by Subscribe when the consumer group already has
// a subscription to the topic on this node.
var ErrGroupBusy = errors.New("watermill: consumer group already subscribed to this topic on this node")

// errNacked and errEnded are what the node handler returns for a nacked
// message and for one the subscription ended before it was acked: both
// leave the message unhandled, so it comes again.
var (
	errNacked = errors.New("watermill: message nacked")
	errEnded  = errors.New("watermill: subscription ended before the message was acked")
)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// ConsumerGroup, when set, makes every subscription durable: its
	// cursor is stored in the node under the group and the topic, and a
	// later subscription of the group resumes after the last acked
	// message. Letters, digits, '-', '_' and '.'. Empty: subscriptions
	// live in memory (see the package doc).
	ConsumerGroup string
	// Start says where a subscription with no stored cursor begins.
	// Default (the zero value is node.StartNow, so this field is a
	// pointer): node.StartBeginning, every journaled message first.
	Start *node.Start
	// NackBackoff is how long a nacked message waits before it comes
	// again; it doubles on each Nack of the same message up to
	// MaxNackBackoff. Default 100 ms and 1 s.
	NackBackoff, MaxNackBackoff time.Duration
	// Logger receives the errors of closing subscriptions. Nil: slog.Default().
	Logger *slog.Logger
}

// Subscriber subscribes to a mesh through a node. It is safe for
// concurrent use. Closing it ends its subscriptions and does not close the
// node.
type Subscriber struct {
	n     *node.Node
	cfg   SubscriberConfig
	start node.Start

	mu     sync.Mutex // guards closed and groups
	closed bool
	groups map[string]bool // durable subscription names in use
	done   chan struct{}   // closed by Close
	wg     sync.WaitGroup  // one per subscription
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber on n.
func NewSubscriber(n *node.Node, cfg SubscriberConfig) (*Subscriber, error) {
	if n == nil {
		return nil, errors.New("watermill: nil node")
	}
	for _, c := range cfg.ConsumerGroup {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, fmt.Errorf("watermill: consumer group %q: letters, digits, '-', '_' and '.'", cfg.ConsumerGroup)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NackBackoff <= 0 {
		cfg.NackBackoff = 100 * time.Millisecond
	}
	if cfg.MaxNackBackoff < cfg.NackBackoff {
		cfg.MaxNackBackoff = max(time.Second, cfg.NackBackoff)
	}
	start := node.StartBeginning
	if cfg.Start != nil {
		start = *cfg.Start
	}
	return &Subscriber{n: n, cfg: cfg, start: start, groups: map[string]bool{}, done: make(chan struct{})}, nil
}

// Subscribe returns a channel of the messages whose topic (signal type)
// matches topic, a router pattern. The channel is closed when ctx ends or
// the Subscriber is closed. Each message must be acked or nacked before the
// next one comes (see the package doc).
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	name := ""
	opts := []node.SubOption{node.WithStart(s.start), node.WithRetry(node.Retry{
		Attempts: math.MaxInt, Backoff: s.cfg.NackBackoff, MaxBackoff: s.cfg.MaxNackBackoff, NoDeadLetter: true}),
		node.WithoutTruncationNotice()} // a notice is no message of the topic
	if s.cfg.ConsumerGroup != "" {
		name = "watermill." + s.cfg.ConsumerGroup + "." + topic
		if s.groups[name] || s.groupActive(ctx, name) {
			return nil, ErrGroupBusy
		}
		opts = append(opts, node.WithName(name))
	}
	out := make(chan *message.Message)
	stop := make(chan struct{}) // closed when the subscription ends
	h := func(nctx context.Context, sig *signalmesh.Signal) error { return handOver(ctx, nctx, stop, out, sig) }
	sub, err := s.n.Subscribe(topic, h, opts...)
	if err != nil {
		return nil, fmt.Errorf("watermill: subscribe %q: %w", topic, err)
	}
	if name != "" {
		s.groups[name] = true
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		close(stop)
		if err := sub.Close(); err != nil && !errors.Is(err, node.ErrClosed) {
			s.cfg.Logger.Warn("watermill: close subscription", "topic", topic, "err", err)
		}
		close(out) // the handler has returned: nothing sends any more
		if name != "" {
			s.mu.Lock()
			delete(s.groups, name)
			s.mu.Unlock()
		}
	}()
	return out, nil
}

// groupActive reports whether this node holds a live subscription called name
// (made by another Subscriber on the same node).
func (s *Subscriber) groupActive(ctx context.Context, name string) bool {
	subs, err := s.n.Subscriptions(ctx)
	if err != nil {
		return false
	}
	self := s.n.ID().String()
	for _, si := range subs {
		if si.Peer == self && si.Name == name {
			return true
		}
	}
	return false
}

// handOver gives one signal to the subscriber's channel as a message and
// waits for its Ack or Nack. ctx is Subscribe's, nctx the node's handler
// context (done when the node closes).
func handOver(ctx, nctx context.Context, stop <-chan struct{}, out chan<- *message.Message, sig *signalmesh.Signal) error {
	msg := FromSignal(sig)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(mctx)
	select {
	case out <- msg:
	case <-stop:
		return errEnded
	case <-nctx.Done():
		return errEnded
	}
	select {
	case <-msg.Acked():
		return nil
	case <-msg.Nacked():
		return errNacked
	case <-stop:
		return errEnded
	case <-nctx.Done():
		return errEnded
	}
}

// Close ends every subscription (their channels are closed) and waits for
// them. Idempotent. The node stays open.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
