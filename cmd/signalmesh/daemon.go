package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/internal/liblog"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/router"
)

const nodeUsage = `Usage: signalmesh node [flags]

Runs a peer until SIGINT or SIGTERM, with an HTTP API:

  POST /v1/publish?consistency=eventual|weak|quorum:K|quorum-in-memory:K&timeout=D   a CloudEvent
                                  (structured, binary or batch mode); answers
                                  {"published":n,"ids":[...]}; a quorum publish not
                                  acknowledged within D answers 504 (it stays journaled)
  GET  /v1/tail?pattern=P         server-sent events: every signal matching P as it is
                                  delivered; with Last-Event-ID, resumes after that event
  GET  /v1/status                 the node's status (consumer groups included), peers,
                                  members, the mesh's subscriptions, bridge counts (JSON)
  GET  /v1/replay?pattern=P&after=ID&since=T   the journal's signals matching P, in
                                  replay order, streamed as a JSON array; after the first
                                  signal with id ID; not older than T (RFC 3339);
                                  with format=ndjson one a line, then {"next_cursor","more"};
                                  &cursor=C goes on from a cursor, &limit=N pages
  GET  /v1/digest                 the journal's size and digest (JSON)
  POST /v1/fault/block, /heal     cut the node off from peers, and heal (with -fault-api)
  POST /v1/ingest                 the bridge ingress (when tokens or a secret are set)
  GET  /metrics                   Prometheus metrics
  GET  /healthz                   200 "ok" while the node's store takes writes, its loop
                                  answers and no signal waits past -cause-timeout; else
                                  503 saying what is wrong
  GET  /readyz                    200 once the node has a peer, else 503

With -api-token every endpoint but /healthz, /readyz and /v1/ingest (which has its
own tokens) requires "Authorization: Bearer TOKEN", /metrics included.
Without a token, -http must be a loopback address (-insecure-http
overrides). Requests whose Host is not localhost, an address the API
listens on, or a name in -http-hosts are refused (DNS rebinding).

Every setting can come from a JSON config file (-config), from environment
variables SIGNALMESH_<FLAG> (upper case, '-' as '_'), or from flags:
flags win over the environment, which wins over the file. Bridge routes and destinations are set in the
config file ("bridge": {"cluster", "tokens", "secret", "routes",
"destinations"}); see README. So is retention ("retention": [{"pattern":
"sensor.**", "max_age": "1h"}, {"pattern": "**", "max_count": 100000}]):
replay and new subscriptions leave out what is past it, and /v1/replay's
NDJSON says where, with a line {"past_retention": N}.

Flags:
`

func nodeCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, nodeUsage); fs.PrintDefaults() }
	cfg, err := loadDaemonConfig(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh node:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDaemon(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "signalmesh node:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a configuration mistake (exit code 2).
type usageError struct{ error }

func runDaemon(ctx context.Context, cfg *daemonConfig, stdout, stderr io.Writer) error {
	nc, err := cfg.nodeConfig()
	if err != nil {
		return usageError{err}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return usageError{fmt.Errorf("log-level %q: %w", cfg.LogLevel, err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if f, ok := stderr.(*os.File); ok && f == os.Stderr {
		// The process's own daemon: the libraries' logs (go-libp2p, bitswap,
		// go-log) go through its logger too, from errors up, as go-log
		// printed them before (at warn, libp2p reports every reset stream
		// of a cut connection: "error reading identify message"). Not for
		// a daemon a test runs in-process: the routing is process-wide.
		liblog.Route(log, max(level, slog.LevelError))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nc.Logger, nc.Registerer = log, reg
	cluster := cfg.Bridge.Cluster
	if cluster == "" {
		cluster = cfg.Mesh
	}
	var routes []bridge.IngressRoute
	for _, r := range cfg.Bridge.Routes {
		c, err := parseConsistency(r.Consistency)
		if err != nil {
			return usageError{fmt.Errorf("bridge route %q: %w", r.Pattern, err)}
		}
		routes = append(routes, bridge.IngressRoute{Pattern: r.Pattern, Consistency: c})
	}
	dests, err := cfg.destinations()
	if err != nil {
		return usageError{err}
	}
	if err := checkExposure(cfg, stderr); err != nil {
		return usageError{err}
	}
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("HTTP API: %w", err)
	}
	defer ln.Close()

	var gate *node.Blocklist
	if cfg.FaultAPI {
		gate = node.NewBlocklist()
		nc.Gater = gate
	}
	n, err := node.New(ctx, nc)
	if err != nil {
		return err
	}
	stopRecord, err := startRecord(n, cfg)
	if err != nil {
		_ = n.Close()
		return err
	}
	var store ds.Batching = dssync.MutexWrap(ds.NewMapDatastore())
	if cfg.DataDir != "" {
		if store, err = pebbleds.NewDatastore(filepath.Join(cfg.DataDir, "bridge")); err != nil {
			_ = n.Close()
			return fmt.Errorf("bridge store: %w", err)
		}
	}
	hub := newTailHub(n)
	closeAll := func(eg *bridge.Egress) error {
		var errs []error
		if eg != nil {
			errs = append(errs, eg.Close())
		}
		errs = append(errs, hub.close(), stopRecord(), n.Close(), store.Close())
		return errors.Join(errs...)
	}
	var eg *bridge.Egress
	if len(dests) > 0 {
		if eg, err = bridge.NewEgress(n, bridge.EgressConfig{Cluster: cluster, Store: store, Destinations: dests, Logger: log}); err != nil {
			_ = closeAll(nil)
			return usageError{err}
		}
	}
	var in *bridge.Ingress
	if len(cfg.Bridge.Tokens) > 0 || cfg.Bridge.Secret != "" {
		if in, err = bridge.NewIngress(n, bridge.IngressConfig{Cluster: cluster, Tokens: cfg.Bridge.Tokens,
			Secret: []byte(cfg.Bridge.Secret), Routes: routes, Logger: log}); err != nil {
			_ = closeAll(eg)
			return usageError{err}
		}
	}
	// Streams (tail, replay) end when the daemon stops, so that Shutdown
	// need not wait for them; a publish under way is answered (Shutdown
	// waits up to 10 s for it), not cut off as if its client had left.
	stopping, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	api := &api{n: n, eg: eg, in: in, gate: gate, hub: hub, token: cfg.APIToken, log: log, reg: reg, stopping: stopping}
	srv := &http.Server{Handler: newHostGuard(cfg, ln.Addr()).wrap(api.routes()), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addrs := n.AddrInfo()
	var p2p []string
	for _, a := range addrs.Addrs {
		p2p = append(p2p, a.String()+"/p2p/"+addrs.ID.String())
	}
	fmt.Fprintf(stdout, "signalmesh node %s: mesh %q, cluster %q\n  libp2p: %s\n  http:   http://%s\n",
		n.ID(), cfg.Mesh, cluster, strings.Join(p2p, " "), ln.Addr())
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	fmt.Fprintln(stdout, "signalmesh node: shutting down")
	endStreams()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	herr := srv.Shutdown(sctx)
	cerr := closeAll(eg)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err = errors.Join(err, herr, cerr); err == nil {
		fmt.Fprintln(stdout, "signalmesh node: stopped")
	}
	return err
}

// api is the daemon's HTTP API.
type api struct {
	n     *node.Node
	eg    *bridge.Egress
	in    *bridge.Ingress
	gate  *node.Blocklist // with -fault-api
	hub   *tailHub
	token string
	log   *slog.Logger
	reg   *prometheus.Registry
	// stopping ends when the daemon stops: streams end with it.
	stopping context.Context
}

// streamContext is r's context, ended too when the daemon stops.
func (a *api) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(a.stopping, cancel)
	return ctx, func() { stop(); cancel() }
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/publish", a.auth(a.publish))
	mux.HandleFunc("GET /v1/tail", a.auth(a.tail))
	mux.HandleFunc("GET /v1/status", a.auth(a.status))
	mux.HandleFunc("GET /v1/replay", a.auth(a.replay))
	mux.HandleFunc("GET /v1/digest", a.auth(a.digest))
	if a.gate != nil {
		mux.HandleFunc("POST /v1/fault/block", a.auth(a.block))
		mux.HandleFunc("POST /v1/fault/heal", a.auth(a.heal))
	}
	mux.HandleFunc("GET /metrics", a.auth(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}).ServeHTTP))
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	if a.in != nil {
		mux.Handle("/v1/ingest", a.in) // its own authentication
	}
	return mux
}

func (a *api) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="signalmesh"`)
				apiError(w, http.StatusUnauthorized, "bearer token required")
				return
			}
		}
		h(w, r)
	}
}

func apiError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	c, err := parseConsistency(r.URL.Query().Get("consistency"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "%v", err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		apiError(w, http.StatusRequestEntityTooLarge, "%v", err)
		return
	}
	sigs, _, err := bridge.ReadSignals(r.Header, body, signalmesh.Limits{})
	if err != nil {
		var re *bridge.RequestError
		if errors.As(err, &re) {
			apiError(w, re.Status, "%s", re.Msg)
			return
		}
		apiError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx := r.Context()
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			apiError(w, http.StatusBadRequest, "timeout %q: want a positive duration such as 2s", t)
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if err := a.n.PublishWith(ctx, c, sigs...); err != nil {
		apiError(w, publishStatus(err), "%v", err)
		return
	}
	ids := make([]string, len(sigs))
	for i, s := range sigs {
		ids[i] = s.ID
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"published": len(sigs), "ids": ids})
}

// publishStatus is the HTTP status of a failed publish: 4xx only for what
// the client must change (a conflict, an invalid signal).
func publishStatus(err error) int {
	switch {
	case errors.Is(err, node.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, node.ErrQuorum), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout // the signals may be published: retrying is safe
	case errors.Is(err, context.Canceled):
		return 499 // the client gave up (nginx's "client closed request"); nobody reads it
	case errors.Is(err, node.ErrConflict):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// tail streams the signals matching a pattern as server-sent events, each
// with an id; a client that reconnects with Last-Event-ID gets what was
// delivered after that event first (see tailHub). A client that reads
// more than tailHistory signals behind loses the oldest: it is told how
// many in a "dropped" event. After a daemon restart the ids are unknown:
// the stream says so in a "reset" event and starts at the new process's
// first signal.
func (a *api) tail(w http.ResponseWriter, r *http.Request) {
	pattern := r.URL.Query().Get("pattern")
	if pattern == "" {
		pattern = "**"
	}
	if err := router.Validate(pattern); err != nil {
		apiError(w, http.StatusBadRequest, "%v", err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	if err := a.hub.start(); err != nil {
		apiError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	next, known := a.hub.resume(r.Header.Get("Last-Event-ID"))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": tailing %s\n\n", pattern)
	if !known {
		fmt.Fprintf(w, "event: reset\ndata: event id %q is not from this run of the node: what it delivered after that event "+
			"may be missing (signalmesh replay has the journal)\n\n", r.Header.Get("Last-Event-ID"))
	}
	fl.Flush()
	ctx, cancel := a.streamContext(r)
	defer cancel()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		sigs, first, lost, wake := a.hub.read(next, 256)
		if lost > 0 {
			fmt.Fprintf(w, "event: dropped\ndata: %d\n\n", lost)
		}
		for i, s := range sigs {
			if router.Matches(pattern, s.Type) {
				b, _ := s.MarshalJSON()
				fmt.Fprintf(w, "id: %s\nevent: signal\ndata: %s\n\n", a.hub.id(first+uint64(i)), b)
			}
		}
		next = first + uint64(len(sigs))
		if lost > 0 || len(sigs) > 0 {
			fl.Flush()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case <-wake:
		}
	}
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.n.Status(r.Context())
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	subs, err := a.n.Subscriptions(r.Context())
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	out := map[string]any{"node": st, "peers": a.n.Peers(), "mesh": a.n.Mesh(), "members": a.n.Members(), "subscriptions": subs}
	if a.eg != nil {
		out["egress"] = a.eg.Stats()
	}
	if a.in != nil {
		out["ingress"] = a.in.Stats()
	}
	writeJSON(w, http.StatusOK, out)
}

// replayLimitMax bounds limit=: one response holds at most this many
// signals (a client pages on with the cursor).
const replayLimitMax = 100000

// replay streams the journal's signals matching a pattern, in replay
// order, read from the journal as they are written out (the node keeps one
// signal per origin in memory, not the journal): after=ID starts after the
// first signal with that id, since=TIME (RFC 3339) keeps the signals whose
// time is not before it. With format=ndjson (or Accept:
// application/x-ndjson) it writes one CloudEvent a line and, last, a line
// {"next_cursor": C, "more": B}: cursor=C goes on from there, limit=N stops
// after N signals (more is true when it stopped there). Without it, one
// JSON array (no cursor). A read error cuts the stream short once it has
// begun (an NDJSON stream then lacks its cursor line).
func (a *api) replay(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pattern := q.Get("pattern")
	if pattern == "" {
		pattern = "**"
	}
	if err := router.Validate(pattern); err != nil {
		apiError(w, http.StatusBadRequest, "%v", err)
		return
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			apiError(w, http.StatusBadRequest, "since %q: want an RFC 3339 time", v)
			return
		}
		since = t
	}
	cursor, err := journal.ParseCursor(q.Get("cursor"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "cursor %q: not a cursor this API gave", q.Get("cursor"))
		return
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > replayLimitMax {
			apiError(w, http.StatusBadRequest, "limit %q: want 1 to %d", v, replayLimitMax)
			return
		}
	}
	ndjson := q.Get("format") == "ndjson" || strings.Contains(r.Header.Get("Accept"), "application/x-ndjson")
	if !ndjson && (limit > 0 || len(cursor) > 0) {
		apiError(w, http.StatusBadRequest, "cursor and limit need format=ndjson (the cursor is its last line)")
		return
	}
	out := replayWriter{w: w, ndjson: ndjson}
	out.fl, _ = w.(http.Flusher)
	after := q.Get("after")
	var last node.ReplayStep // its Cursor, once the replay ended, is where it ended
	var stop journal.Cursor  // where the page stopped, when it is full
	ctx, cancel := a.streamContext(r)
	defer cancel()
	for st, err := range a.n.ReplayAfter(ctx, pattern, cursor) {
		if err != nil {
			if !out.begun {
				apiError(w, http.StatusServiceUnavailable, "%v", err)
			}
			return
		}
		if st.Truncated > 0 {
			out.truncated(st.Truncated)
		}
		s := st.Signal
		if s == nil {
			continue // the last step: only a truncation
		}
		if limit > 0 && out.n == limit { // one more: the page is full, and goes on before this one
			stop = st.Cursor()
			ref, seq := journal.Place(s)
			stop[ref] = seq - 1
			break
		}
		last = st
		if after != "" {
			if s.ID == after {
				after = ""
			}
			continue
		}
		if !since.IsZero() && s.Time.Before(since) {
			continue
		}
		out.signal(s)
	}
	if out.n == 0 && after != "" && !out.begun {
		apiError(w, http.StatusNotFound, "after: no signal with id %q matches %s in the journal", after, pattern)
		return
	}
	switch {
	case stop != nil:
		out.end(stop, true)
	case last.Signal != nil:
		out.end(last.Cursor(), false)
	default:
		out.end(cursor, false)
	}
}

// replayWriter writes /v1/replay's body: a JSON array, or NDJSON ending
// with a cursor line.
type replayWriter struct {
	w      http.ResponseWriter
	fl     http.Flusher
	ndjson bool
	n      int
	begun  bool
}

func (o *replayWriter) begin() {
	o.begun = true
	if o.ndjson {
		o.w.Header().Set("Content-Type", "application/x-ndjson")
	} else {
		o.w.Header().Set("Content-Type", "application/json")
	}
	o.w.WriteHeader(http.StatusOK)
	if !o.ndjson {
		fmt.Fprint(o.w, "[")
	}
}

func (o *replayWriter) signal(s *signalmesh.Signal) {
	switch {
	case o.n == 0 && !o.begun:
		o.begin()
	case o.n > 0 && !o.ndjson:
		fmt.Fprint(o.w, ",")
	}
	b, _ := s.MarshalJSON()
	_, _ = o.w.Write(b)
	if o.ndjson {
		fmt.Fprintln(o.w)
	}
	if o.n++; o.n%256 == 0 && o.fl != nil {
		o.fl.Flush()
	}
}

// truncated writes, in NDJSON, a line saying that n signals matching the
// pattern were passed over here because they are past retention.
func (o *replayWriter) truncated(n int) {
	if !o.ndjson {
		return // an array has no room for it: NDJSON says it
	}
	if o.n == 0 && !o.begun {
		o.begin()
	}
	b, _ := json.Marshal(map[string]any{"past_retention": n}) // no CloudEvents attribute has a "_"
	_, _ = o.w.Write(append(b, '\n'))
}

func (o *replayWriter) end(c journal.Cursor, more bool) {
	if !o.begun {
		o.begin()
	}
	if !o.ndjson {
		fmt.Fprintln(o.w, "]")
		return
	}
	b, _ := json.Marshal(map[string]any{"next_cursor": c.String(), "more": more}) // no CloudEvents attribute has a "_"
	_, _ = o.w.Write(append(b, '\n'))
}

// healthz answers 200 while the node is healthy (node.Health), 503 with
// what is wrong otherwise.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	h := a.n.Health(r.Context())
	if !h.OK() {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, h)
}

// readyz answers 200 once the node has a peer: it is part of a mesh.
func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	if p := len(a.n.Peers()); p == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "no peers")
	} else {
		fmt.Fprintf(w, "ok: %d peers\n", p)
	}
}
