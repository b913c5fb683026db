package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// A gossip message carries one signal in its binary wire form (first byte
// 1), or a frame of several: frameMagic, a uvarint count, then per signal a
// uvarint length and its wire form. Framing the signals of one commit means
// one GossipSub message per frame instead of per signal, which is most of
// GossipSub's cost.
const frameMagic = 0xF1

// maxFrame keeps a frame well under GossipSub's 1 MiB message limit.
const maxFrame = 512 << 10

// maxFrameSignals bounds the count a frame may claim.
const maxFrameSignals = 10000

var errFrame = errors.New("node: malformed frame")

// encodeFrames packs signals into messages (see frameWires).
func encodeFrames(sigs []*signalmesh.Signal) ([][]byte, error) {
	wires, err := encodeAll(sigs)
	if err != nil {
		return nil, err
	}
	return frameWires(wires), nil
}

// frameWires packs wire forms into messages of at most maxFrame bytes (a
// single signal larger than that travels alone).
func frameWires(wires [][]byte) [][]byte {
	var out [][]byte
	var cur [][]byte
	size := 0
	flush := func() {
		switch len(cur) {
		case 0:
			return
		case 1:
			out = append(out, cur[0])
		default:
			b := make([]byte, 0, size+10)
			b = append(b, frameMagic)
			b = binary.AppendUvarint(b, uint64(len(cur)))
			for _, w := range cur {
				b = binary.AppendUvarint(b, uint64(len(w)))
				b = append(b, w...)
			}
			out = append(out, b)
		}
		cur, size = nil, 0
	}
	for _, w := range wires {
		if size+len(w)+10 > maxFrame || len(cur) == maxFrameSignals {
			flush()
		}
		cur = append(cur, w)
		size += len(w) + binary.MaxVarintLen64
	}
	flush()
	return out
}

// decodeFrame decodes a gossip message into its signals, validating each
// with lim. Any bad signal rejects the whole message.
func decodeFrame(b []byte, lim signalmesh.Limits) ([]*signalmesh.Signal, error) {
	sigs, _, err := decodeFrameWires(b, lim)
	return sigs, err
}

// decodeFrameWires is decodeFrame that also returns each signal's wire
// form (slices of b).
func decodeFrameWires(b []byte, lim signalmesh.Limits) ([]*signalmesh.Signal, [][]byte, error) {
	return decodeFrameEnds(b, lim, [2]*signalmesh.Signal{})
}

// decodeFrameEnds is decodeFrameWires given the first and last signals
// decoded already with lim (each nil when not).
func decodeFrameEnds(b []byte, lim signalmesh.Limits, ends [2]*signalmesh.Signal) ([]*signalmesh.Signal, [][]byte, error) {
	if len(b) == 0 {
		return nil, nil, errFrame
	}
	if b[0] != frameMagic {
		s := ends[0]
		if s == nil {
			var err error
			if s, err = signalmesh.DecodeBinary(b, lim); err != nil {
				return nil, nil, err
			}
		}
		return []*signalmesh.Signal{s}, [][]byte{b}, nil
	}
	b = b[1:]
	n, k := uvarint(b)
	if k <= 0 || n < 2 || n > maxFrameSignals || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: bad count", errFrame)
	}
	b = b[k:]
	sigs := make([]*signalmesh.Signal, 0, n)
	wires := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, nil, fmt.Errorf("%w: bad length", errFrame)
		}
		w := b[k : k+int(l)]
		var s *signalmesh.Signal
		switch {
		case i == 0 && ends[0] != nil:
			s = ends[0]
		case i == n-1 && ends[1] != nil:
			s = ends[1]
		default:
			var err error
			if s, err = signalmesh.DecodeBinary(w, lim); err != nil {
				return nil, nil, err
			}
		}
		sigs = append(sigs, s)
		wires = append(wires, w)
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return nil, nil, fmt.Errorf("%w: trailing bytes", errFrame)
	}
	return sigs, wires, nil
}

// frameEnds returns the wire forms of the first and last signals of a
// gossip message (one signal: both are it) and the count, without decoding
// any; ok is false when b does not read as a message.
func frameEnds(b []byte) (first, last []byte, count uint64, ok bool) {
	if len(b) == 0 {
		return nil, nil, 0, false
	}
	if b[0] != frameMagic {
		return b, b, 1, true
	}
	b = b[1:]
	n, k := uvarint(b)
	if k <= 0 || n < 2 || n > maxFrameSignals || n > uint64(len(b)) {
		return nil, nil, 0, false
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, nil, 0, false
		}
		w := b[k : k+int(l)]
		if i == 0 {
			first = w
		}
		last = w
		b = b[k+int(l):]
	}
	return first, last, n, len(b) == 0
}

// staleFrame reports whether every signal of a gossip message lies at or
// below its origin's settled sequence (see settled), and how many it
// holds. It decodes and verifies only the first and last signals, and
// returns them for decodeFrameWires to use: an honest frame holds
// consecutive signals of one origin (one commit), so their places and the
// count tell. A message that does not read so is not stale: it is decoded
// and checked in full. A stale message is ignored unread between its ends:
// a relay that puts something else there is not penalised for it (what it
// put there is never delivered either).
func (n *Node) staleFrame(b []byte) (count uint64, stale bool, ends [2]*signalmesh.Signal) {
	first, last, count, ok := frameEnds(b)
	if !ok {
		return 0, false, ends
	}
	s, err := signalmesh.DecodeBinary(first, signalmesh.Limits{})
	if err != nil {
		return 0, false, ends
	}
	ends[0] = s
	origin, from := journal.Place(s)
	if origin == "" {
		return 0, false, ends
	}
	top := n.settled.get(origin)
	if from > top {
		return 0, false, ends
	}
	if count > 1 {
		if s, err = signalmesh.DecodeBinary(last, signalmesh.Limits{}); err != nil {
			return 0, false, ends
		}
		ends[1] = s
		o, to := journal.Place(s)
		if o != origin || to < from || to-from+1 != count || to > top {
			return 0, false, ends
		}
	}
	// Its ends must be the origin's, signed: a frame that names delivered
	// places of one origin with forged ends is checked in full (and costs
	// its sender), not ignored. They were verified when they came first,
	// so this is mostly the verifier's cache.
	if !testNoVerify {
		for i, w := range [][]byte{first, last}[:min(count, 2)] {
			if n.ver.verify(ends[i], w) != nil {
				return 0, false, ends
			}
		}
	}
	return count, true, ends
}
