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

// startRecord starts the -record subscription and, with
// -record-group-file, the group member that records to that file; the
// function it returns closes them and their files.
func startRecord(n *node.Node, cfg *daemonConfig) (func() error, error) {
	pattern := cfg.RecordPattern
	if pattern == "" {
		pattern = "**"
	}
	st, err := recordStrategy(cfg)
	if err != nil {
		return nil, err
	}
	delay, err := chaos.ParseDelay(cfg.RecordDelay)
	if err != nil {
		return nil, usageError{err}
	}
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	if cfg.Record != "" {
		opts := []node.SubOption{node.WithName("record"), node.WithStart(node.StartBeginning)}
		if cfg.RecordGroup != "" && cfg.RecordGroupFile == "" { // -record is the member
			opts = append(opts, node.WithGroup(cfg.RecordGroup), node.WithStrategy(st))
		}
		c, err := recordTo(n, cfg.Record, pattern, delay, opts)
		if err != nil {
			return nil, err
		}
		closers = append(closers, c)
	}
	if cfg.RecordGroupFile != "" { // a member of its own, beside -record; no delay
		opts := []node.SubOption{node.WithStart(node.StartBeginning), node.WithGroup(cfg.RecordGroup), node.WithStrategy(st)}
		c, err := recordTo(n, cfg.RecordGroupFile, pattern, chaos.Delay{}, opts)
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		closers = append(closers, c)
	}
	return closeAll, nil
}

// recordStrategy checks the -record-group flags and returns the group's
// strategy (Hash unless -record-strategy).
func recordStrategy(cfg *daemonConfig) (node.Strategy, error) {
	switch {
	case cfg.RecordGroup == "" && cfg.RecordStrategy != "":
		return node.Hash, usageError{errors.New("-record-strategy without -record-group")}
	case cfg.RecordGroup == "" && cfg.RecordGroupFile != "":
		return node.Hash, usageError{errors.New("-record-group-file without -record-group")}
	case cfg.RecordStrategy == "":
		return node.Hash, nil
	}
	st, err := node.ParseStrategy(cfg.RecordStrategy)
	if err != nil {
		return st, usageError{err}
	}
	return st, nil
}

// recordTo subscribes a Recorder writing to path; the function it returns
// closes the subscription and the file.
func recordTo(n *node.Node, path, pattern string, delay chaos.Delay, opts []node.SubOption) (func() error, error) {
	rec, err := chaos.OpenRecorder(filepath.Clean(path), delay)
	if err != nil {
		return nil, err
	}
	sub, err := n.Subscribe(pattern, rec.Handle, append(opts[:len(opts):len(opts)], node.WithoutTruncationNotice())...) // the record holds signals
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
