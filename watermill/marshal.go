package watermill

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/signalmesh/signalmesh"
)

// ExtMetadata is the extension that carries, JSON-encoded, the metadata
// keys that are neither attribute names nor valid extension names.
const ExtMetadata = "wmmetadata"

// attribute metadata keys that set a signal's CloudEvents attributes.
const (
	mdSource     = "source"
	mdSubject    = "subject"
	mdTime       = "time"
	mdCT         = "datacontenttype"
	mdDataSchema = "dataschema"
	// MetadataSource holds a received signal's source. Publish ignores
	// it: a message forwarded to another topic gets its own source.
	MetadataSource = "ce_source"
)

// ToSignal returns the signal that Publish publishes for msg on topic (see
// the package doc for the mapping); source is the publisher's source prefix.
func ToSignal(topic, source string, msg *message.Message) (*signalmesh.Signal, error) {
	s := &signalmesh.Signal{ID: msg.UUID, Type: topic, SpecVersion: signalmesh.SpecVersion,
		Source: source + "/" + topic, DataContentType: "application/octet-stream"}
	if s.ID == "" {
		return nil, fmt.Errorf("watermill: message without UUID")
	}
	if len(msg.Payload) > 0 {
		s.Data = msg.Payload
	}
	var rest map[string]string
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		v := msg.Metadata[k]
		switch k {
		case mdSource:
			s.Source = v
		case mdSubject:
			s.Subject = v
		case mdCT:
			s.DataContentType = v
		case mdDataSchema:
			s.DataSchema = v
		case MetadataSource:
		case mdTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, fmt.Errorf("watermill: metadata time %q: %w", v, err)
			}
			s.Time = t
		default:
			if k == signalmesh.ExtPeer || k == signalmesh.ExtCausal || k == signalmesh.ExtSig || k == ExtMetadata || s.SetExtension(k, v) != nil {
				if rest == nil {
					rest = map[string]string{}
				}
				rest[k] = v
			}
		}
	}
	if rest != nil {
		b, _ := json.Marshal(rest) // a map of strings always encodes
		_ = s.SetExtension(ExtMetadata, string(b))
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("watermill: topic %q: %w", topic, err)
	}
	return s, nil
}

// FromSignal returns the message a subscription hands over for s: UUID,
// payload and metadata (see the package doc). The message's context is
// not set.
func FromSignal(s *signalmesh.Signal) *message.Message {
	msg := message.NewMessage(s.ID, s.Data)
	md := msg.Metadata
	set := func(k, v string) {
		if v != "" {
			md[k] = v
		}
	}
	set(MetadataSource, s.Source)
	set(mdSubject, s.Subject)
	set(mdCT, s.DataContentType)
	set(mdDataSchema, s.DataSchema)
	if !s.Time.IsZero() {
		md[mdTime] = s.Time.Format(time.RFC3339Nano)
	}
	for k, v := range s.Extensions {
		switch k {
		case signalmesh.ExtPeer, signalmesh.ExtCausal, signalmesh.ExtSig:
			continue
		case ExtMetadata:
			if str, ok := v.(string); ok {
				var rest map[string]string
				if json.Unmarshal([]byte(str), &rest) == nil {
					for rk, rv := range rest {
						md[rk] = rv
					}
					continue
				}
			}
		}
		switch v := v.(type) {
		case string:
			md[k] = v
		case bool:
			md[k] = strconv.FormatBool(v)
		case int32:
			md[k] = strconv.Itoa(int(v))
		}
	}
	return msg
}
