package node

import (
	"encoding/json"
	"fmt"

	"github.com/signalmesh/signalmesh"
)

// TypeTruncated is the type of a truncation notice: the first signal a
// subscription's handler gets when the backlog it asked for (WithStart, or
// a named subscription resuming from its cursor) passed over signals past
// Config.Retention. It says how many of the signals matching the
// subscription's pattern it passed over (Truncation reads it), so that a
// consumer knows where its history was cut instead of finding a silent
// gap. The notice comes whatever the pattern, is never journaled nor
// gossiped, has no place (no sequence: it does not move a named
// subscription's cursor), and goes to a consumer group member's own
// handler, not to a share. It is handed once: an error from the handler is
// counted and logged, not retried, and makes no dead letter; it does not
// count as delivered. A backlog that passed over signals past retention in
// more than one stretch hands a notice before each. A named subscription
// gets it again at its next start while signals past retention lie after
// its cursor (an origin whose last matching signals expired before the
// subscription handled them). A handler that forwards what it gets to
// another system turns it off with WithoutTruncationNotice (the bridge's
// egress, the Watermill subscriber and the daemon's record do).
const TypeTruncated = "signalmesh.truncated"

// truncationData is a notice's data.
type truncationData struct {
	PastRetention int    `json:"past_retention"`
	Pattern       string `json:"pattern"`
	Subscription  string `json:"subscription,omitempty"` // the name, for a named one
}

// Truncation reports how many signals a truncation notice (TypeTruncated)
// says the backlog passed over; ok is false for any other signal.
func Truncation(s *signalmesh.Signal) (left int, ok bool) {
	if s == nil || s.Type != TypeTruncated {
		return 0, false
	}
	var d truncationData
	if err := json.Unmarshal(s.Data, &d); err != nil || d.PastRetention <= 0 {
		return 0, false
	}
	return d.PastRetention, true
}

// truncationNotice makes the notice for a backlog of the subscription
// named name (or none) over pattern that passed over left signals.
func (n *Node) truncationNotice(name, pattern string, left int) (*signalmesh.Signal, error) {
	s, err := signalmesh.New(TypeTruncated, "/signalmesh/"+n.cfg.Mesh+"/"+n.self.String(),
		truncationData{PastRetention: left, Pattern: pattern, Subscription: name})
	if err != nil {
		return nil, fmt.Errorf("node: truncation notice: %w", err)
	}
	return s, nil
}
