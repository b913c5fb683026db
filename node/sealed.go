package node

import (
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/internal/seal"
)

// The node's GossipSub signs nothing (StrictNoSign): signals carry their
// origin's signature (meshsig), and the control topics (acks, peers,
// leases, journal heads) seal their messages with the sender's key
// (package seal), so that each message is verified once per hop, not
// twice.

// publishSealed publishes body on t, sealed with the node's key for t.
func (n *Node) publishSealed(t *pubsub.Topic, body []byte) error {
	data, err := seal.Seal(n.key, t.String(), body)
	if err != nil {
		return err
	}
	return t.Publish(n.ctx, data)
}

// opened is a control message's ValidatorData: its signer and what the
// topic's validator decoded from its body.
type opened[T any] struct {
	from peer.ID
	v    T
}

// openSealed returns the signer and body of msg, a message of a control
// topic. The node's own messages are parsed, not verified.
func (n *Node) openSealed(msg *pubsub.Message) (peer.ID, []byte, error) {
	var e *seal.Envelope
	var err error
	if msg.ReceivedFrom == n.self {
		e, err = seal.Parse(msg.Data)
	} else {
		e, err = seal.Open(msg.GetTopic(), msg.Data)
	}
	if err != nil {
		return "", nil, err
	}
	return e.Signer, e.Body, nil
}
