package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/node"
)

// startRecord starts the -record subscription; the function it returns
// closes it and the file.
func startRecord(n *node.Node, cfg *daemonConfig) (func() error, error) {
	if cfg.Record == "" {
		return func() error { return nil }, nil
	}
	pattern := cfg.RecordPattern
	if pattern == "" {
		pattern = "**"
	}
	delay, err := chaos.ParseDelay(cfg.RecordDelay)
	if err != nil {
		return nil, usageError{err}
	}
	rec, err := chaos.OpenRecorder(filepath.Clean(cfg.Record), delay)
	if err != nil {
		return nil, err
	}
	opts := []node.SubOption{node.WithName("record"), node.WithStart(node.StartBeginning)}
	if cfg.RecordGroup != "" {
		st := node.Hash
		if cfg.RecordStrategy != "" {
			if st, err = node.ParseStrategy(cfg.RecordStrategy); err != nil {
				_ = rec.Close()
				return nil, usageError{err}
			}
		}
		opts = append(opts, node.WithGroup(cfg.RecordGroup), node.WithStrategy(st))
	} else if cfg.RecordStrategy != "" {
		_ = rec.Close()
		return nil, usageError{errors.New("-record-strategy without -record-group")}
	}
	sub, err := n.Subscribe(pattern, rec.Handle, opts...)
	if err != nil {
		_ = rec.Close()
		return nil, fmt.Errorf("record: %w", err)
	}
	return func() error { return errors.Join(sub.Close(), rec.Close()) }, nil
}

// digest answers the journal's size and digest: {"count":n,"digest":"..."}.
func (a *api) digest(w http.ResponseWriter, r *http.Request) {
	c, d, err := a.n.JournalDigest(r.Context())
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": c, "digest": d})
}

// block cuts the node off from the peers named in {"peers":[...]}, in place
// of those blocked before: it refuses their connections and closes the
// open ones.
func (a *api) block(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Peers []string `json:"peers"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, "want {\"peers\":[peer ids]}: %v", err)
		return
	}
	ids := make([]peer.ID, 0, len(req.Peers))
	for _, s := range req.Peers {
		id, err := peer.Decode(s)
		if err != nil {
			apiError(w, http.StatusBadRequest, "peer %q: %v", s, err)
			return
		}
		ids = append(ids, id)
	}
	a.gate.Clear()
	a.gate.Block(ids...)
	for _, id := range ids {
		_ = a.n.Disconnect(id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"blocked": len(ids)})
}

// heal lifts every block; the node's redialer reconnects its bootstrap peers.
func (a *api) heal(w http.ResponseWriter, _ *http.Request) {
	a.gate.Clear()
	writeJSON(w, http.StatusOK, map[string]any{"blocked": 0})
}
