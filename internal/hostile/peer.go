// Package hostile is the fault harness's hostile node (`signalmesh
// hostile`): libp2p hosts that join a mesh's GossipSub topics as a node
// does and attack it for a while, at a modest rate: gossip forged in
// honest nodes' names (signed by the wrong key, unsigned, framed with its
// own), a flood of its own signals that never become ready, bogus journal
// head announcements, and journal blocks (written by a real go-ds-crdt
// replica of the journal) that put entries in honest origins' names,
// overwrite or tombstone theirs. It reports what it sent
// (chaos.HostileReport); the harness checks that the honest nodes refused
// and counted each kind.
package hostile

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// member is one hostile identity: a libp2p host with a GossipSub set up as
// a node's (no author, no GossipSub signature, messages named by a hash of
// their content), so that honest nodes read what it sends.
type member struct {
	h      host.Host
	ps     *pubsub.PubSub
	key    crypto.PrivKey
	id     peer.ID
	topics map[string]*pubsub.Topic
	boot   map[peer.ID]bool // the bootstrap peers: honest persistent nodes

	stop chan struct{} // closed by close: ends redial
	done chan struct{} // closed when redial ended (nil: not started)
}

// messageID names a message as a node does (node/gossip.go).
func messageID(m *pb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:20])
}

// newMember starts a host listening on listen and its GossipSub; ctx
// bounds the GossipSub's life.
func newMember(ctx context.Context, listen string) (*member, error) {
	h, err := libp2p.New(libp2p.ListenAddrStrings(listen))
	if err != nil {
		return nil, err
	}
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true), pubsub.WithNoAuthor(),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithMessageIdFn(messageID))
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	return &member{h: h, ps: ps, key: h.Peerstore().PrivKey(h.ID()), id: h.ID(), topics: map[string]*pubsub.Topic{}}, nil
}

// connect dials every bootstrap peer; it fails only when none answers.
func (m *member) connect(ctx context.Context, boot []peer.AddrInfo) error {
	var last error
	ok := 0
	m.boot = map[peer.ID]bool{}
	for _, ai := range boot {
		m.boot[ai.ID] = true
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := m.h.Connect(cctx, ai); err != nil {
			last = err
		} else {
			ok++
		}
		cancel()
	}
	if ok == 0 && last != nil {
		return fmt.Errorf("hostile: no bootstrap peer answered: %w", last)
	}
	return nil
}

// join joins topic (once). It does not wait for peers: the attacks skip
// a turn while their topic has none (see reaches).
func (m *member) join(topic string) (*pubsub.Topic, error) {
	if t := m.topics[topic]; t != nil {
		return t, nil
	}
	t, err := m.ps.Join(topic)
	if err != nil {
		return nil, err
	}
	m.topics[topic] = t
	return t, nil
}

// reaches reports whether a message published on t now reaches one of
// m's bootstrap peers (persistent nodes, whose counters the harness
// reads): an attack sent to nobody, or only to an ephemeral node beside
// (which refuses it, but whose counters nobody reads: seed 2149), is not
// counted as sent.
func (m *member) reaches(t *pubsub.Topic) bool {
	for _, p := range t.ListPeers() {
		if m.boot[p] {
			return true
		}
	}
	return false
}

// redial dials again, every redialEvery, each bootstrap peer it is not
// connected to (a node killed and restarted, a connection trimmed or cut):
// an attacker keeps trying. It runs until close.
func (m *member) redial(boot []peer.AddrInfo) {
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() { // owned by the member: close stops it and waits
		defer close(m.done)
		t := time.NewTicker(redialEvery)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			for _, ai := range boot {
				if m.h.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), redialEvery)
				go func() { // ends the dial when close comes first
					select {
					case <-m.stop:
						cancel()
					case <-ctx.Done():
					}
				}()
				_ = m.h.Connect(ctx, ai)
				cancel()
			}
		}
	}()
}

const redialEvery = time.Second

// close stops redialling, leaves the topics and closes the host.
func (m *member) close() {
	if m.done != nil {
		close(m.stop)
		<-m.done
	}
	for _, t := range m.topics {
		_ = t.Close()
	}
	_ = m.h.Close()
}
