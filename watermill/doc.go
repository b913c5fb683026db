// Package watermill is a Watermill (github.com/ThreeDotsLabs/watermill)
// Publisher and Subscriber over a signalmesh node, so that services built on
// Watermill's router, middleware and CQRS components exchange messages
// peer to peer, with no broker.
//
// # Mapping
//
// A topic is a signal type: Publish(topic, msgs...) publishes each message
// as a signal of type topic (a dot-separated type such as order.created),
// and Subscribe(ctx, topic) takes topic as a router pattern, so order.* or
// order.** subscribe to several types at once. A message's UUID is the
// signal's id and its payload the signal's data; its source is
// PublisherConfig.Source followed by "/" and the topic, so that one UUID on
// two topics (Watermill's forwarder does this) is two events, while
// publishing the same message on the same topic again is an idempotent
// retry.
//
// Metadata keys that are CloudEvents attribute names set those attributes
// (source, subject, time, datacontenttype, dataschema); other keys that are
// valid extension names (lower-case a-z and 0-9) become string extensions,
// which any CloudEvents tool sees, and "causeid" makes the message the
// effect of the signal with that id (causal order on every peer); the
// remaining keys travel together, JSON-encoded, in the extension
// wmmetadata. A received message's metadata holds the same keys, plus the
// attributes and extensions of signals that did not come from Watermill
// (the node's internal meshpeer and meshcausal are left out); the signal's
// source is under ce_source, which Publish ignores, so that a message
// forwarded to another topic is a new event there.
//
// # Delivery
//
// Subscribe hands one message at a time to the channel it returns and waits
// for its Ack or Nack before the next: Ack moves the subscription on (and
// its persistent cursor, with a ConsumerGroup); Nack redelivers the same
// message after SubscriberConfig.NackBackoff, as often as it is nacked,
// with later messages waiting, so order is kept. The message's context is
// derived from Subscribe's context and cancelled once the message is acked
// or nacked, or the subscription ends.
//
// Delivery is at least once. A subscription starts at SubscriberConfig.Start
// (default: the beginning of the journal, like a Kafka consumer reading
// from the earliest offset). Messages of one publishing node arrive in the
// order it published them; messages from several nodes arrive in causal
// order (an effect after its cause), which is a partial order.
//
// With a ConsumerGroup, a subscription is durable: its cursor is kept in
// the node's store under the group and topic, and a later Subscribe with
// the same group (in a later Subscriber, or after a restart of a node with a
// DataDir) resumes after the last acked message; a message delivered but
// not acked when the subscription ends comes again. Every group gets every
// message. A group does not share its messages among several subscribers
// (competing consumers): the node has no group assignment yet, so a group
// has at most one subscription per topic per node at a time (ErrGroupBusy).
// Without a ConsumerGroup a subscription lives in memory: past the node's
// Params.SubscriberQueue messages queued for it, it drops (counted as
// subscriber_overflow); use a group where nothing may be lost.
//
// # Universal tests
//
// The package passes Watermill's universal Pub/Sub suite
// (pubsub/tests.TestPubSub) with Persistent, GuaranteedOrder (with a single
// subscriber), NewSubscriberReceivesOldMessages and ConsumerGroups
// declared, with publisher and subscriber on one peer (the package's own
// tests also cross two peers). Not declared: ExactlyOnceDelivery (delivery
// is at least once), ContextPreserved (a Go context cannot cross the
// network; a trace can, see package otelmesh), RequireSingleInstance (every
// Subscriber instance sees the journal) and reconnect (no broker to
// restart).
package watermill
