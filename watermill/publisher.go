package watermill

import (
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("watermill: closed")

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Source prefixes the source of every published signal: a message on
	// topic T has source Source+"/"+T unless its metadata sets "source".
	// Default "/watermill".
	Source string
	// Consistency of every publish. Zero value: node.Eventual (journaled
	// and gossiped; Publish returns once the local journal has it).
	Consistency node.Consistency
}

// Publisher publishes Watermill messages into a mesh through a node. It is
// safe for concurrent use. Closing it does not close the node.
type Publisher struct {
	n   *node.Node
	cfg PublisherConfig

	mu     sync.RWMutex // guards closed; Publish holds it for reading
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher on n.
func NewPublisher(n *node.Node, cfg PublisherConfig) (*Publisher, error) {
	if n == nil {
		return nil, errors.New("watermill: nil node")
	}
	if cfg.Source == "" {
		cfg.Source = "/watermill"
	}
	return &Publisher{n: n, cfg: cfg}, nil
}

// Publish publishes msgs as signals of type topic, in order, and returns
// once the node has them with the configured consistency. Consecutive
// messages with the same context go in one node publish (one journal
// commit); a message's context bounds its publish and is what publish
// middleware (such as trace propagation) reads. Publishing a message again
// on the same topic is an idempotent retry. It blocks; calls may overlap.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	for len(msgs) > 0 {
		ctx := msgs[0].Context()
		i := 1
		for i < len(msgs) && msgs[i].Context() == ctx {
			i++
		}
		sigs := make([]*signalmesh.Signal, i)
		for j, m := range msgs[:i] {
			s, err := ToSignal(topic, p.cfg.Source, m)
			if err != nil {
				return err
			}
			sigs[j] = s
		}
		if err := p.n.PublishWith(ctx, p.cfg.Consistency, sigs...); err != nil {
			return err
		}
		msgs = msgs[i:]
	}
	return nil
}

// Close makes later Publish calls fail; it waits for those in progress.
// Idempotent. The node stays open.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}
