// Package signalmesh is the signal type of signalmesh, a library for event
// signals that replicate peer-to-peer over libp2p with no broker and no leader.
//
// A Signal is a CloudEvents 1.0 event. It has the required attributes id,
// source, specversion ("1.0") and type; the optional subject, time,
// datacontenttype and dataschema; a payload (data); and extension attributes.
// signalmesh's own attributes are extensions as well (ExtCauseID, ExtPeer,
// ExtCausal, ExtSig), so a signal read or written as JSON is a valid CloudEvent that
// any CloudEvents tool understands, and nothing is lost on the way.
//
// A signal's type is a dot-separated path (order.created, user.123.updated)
// that package router matches against patterns with * and ** wildcards.
//
// # Making signals
//
// New fills in a UUIDv7 id, strictly increasing within the process, and the
// current time, infers datacontenttype from the payload, and validates:
//
//	s, err := signalmesh.New("order.created", "/shop/eu-1", order,
//		signalmesh.WithSubject("order-42"), signalmesh.WithCause(cart))
//
// Validation errors are *FieldError values naming the bad attribute; test the
// kind with errors.Is (ErrBadType, ErrTooLarge, ...).
//
// # Codecs
//
// Two encodings, both canonical (equal signals encode to equal bytes):
//
//   - CloudEvents JSON structured format: MarshalJSON, UnmarshalJSON and
//     DecodeJSON. JSON data is written inline under "data", text as a string,
//     anything else as "data_base64".
//   - A compact binary wire form for gossip and storage: MarshalBinary,
//     UnmarshalBinary and DecodeBinary.
//
// Both decoders enforce Limits while they decode, so that a hostile peer
// cannot make them allocate past the bound, and both are fuzzed.
//
// # Purity
//
// This package does no I/O and starts no goroutines. New reads the wall clock
// and crypto/rand unless WithClock/WithTime and WithIDSource/WithID say
// otherwise.
package signalmesh
