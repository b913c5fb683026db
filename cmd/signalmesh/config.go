package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// daemonConfig is everything `signalmesh node` can be told, from a JSON
// config file, then environment variables (SIGNALMESH_<FLAG>, upper case,
// '-' as '_'), then flags, each overriding the one before.
type daemonConfig struct {
	Mesh      string   `json:"mesh"`
	DataDir   string   `json:"data_dir"`
	Listen    []string `json:"listen"`
	Bootstrap []string `json:"bootstrap"`
	MDNS      bool     `json:"mdns"`
	// SnapshotJoin makes a node with an empty journal start from a
	// bootstrap peer's snapshot (node.Config.SnapshotJoin).
	SnapshotJoin bool `json:"snapshot_join"`
	// Region tags the node for consumer groups' LocalFirst (node.Config.Region).
	Region string `json:"region"`
	// Relay offers circuit relay service (node.Config.RelayService).
	Relay bool `json:"relay"`
	// Relays are relay nodes to keep a reservation on, as multiaddrs
	// ending in /p2p/<id> (node.Config.Relays).
	Relays []string `json:"relays"`
	// Announce replaces the listen addresses in what the node tells its
	// peers (node.Config.AnnounceAddrs).
	Announce []string `json:"announce"`
	PSK      string   `json:"psk"` // 64 hex digits
	Allow    []string `json:"allow"`
	HTTP     string   `json:"http"`      // API address
	APIToken string   `json:"api_token"` // required on every API endpoint but /healthz, /readyz and the ingress (own auth) when set
	// InsecureHTTP lets the API serve a non-loopback address without
	// APIToken (refused otherwise), with a warning on stderr.
	InsecureHTTP bool `json:"insecure_http"`
	// HTTPHosts are the host names the API answers to besides localhost,
	// IP addresses it listens on, and the name in HTTP: a request with
	// another Host (a DNS-rebinding web page) is refused.
	HTTPHosts []string  `json:"http_hosts"`
	LogLevel  string    `json:"log_level"`
	Params    params    `json:"params"`
	Bridge    bridgeCfg `json:"bridge"`
	// Record, when set, is a file where a persistent subscription
	// ("record", over RecordPattern, default "**") appends every signal it
	// delivers, one JSON line each (package chaos reads it).
	Record        string `json:"record"`
	RecordPattern string `json:"record_pattern"`
	// RecordDelay makes the record's handler slow, "MIN-MAX" (such as
	// "300us-200ms"): each signal waits a time drawn log-uniformly from
	// the range by a hash of its identity (fault injection).
	RecordDelay string `json:"record_delay"`
	// RecordGroup makes the record subscription a member of this consumer
	// group (node.WithGroup), with RecordStrategy ("hash:subject", the
	// default; "balanced", "local-first", "broadcast").
	RecordGroup    string `json:"record_group"`
	RecordStrategy string `json:"record_strategy"`
	// RecordGroupFile, when set (with RecordGroup), is a second record,
	// in Record's format, of a subscription of its own (named
	// "group.<RecordGroup>", over RecordPattern, without RecordDelay) that
	// is the group member instead of Record's: Record stays a plain
	// subscription (every signal), this file holds the group's share of
	// this node (the fault harness's group part).
	RecordGroupFile string `json:"record_group_file"`
	// FaultAPI serves /v1/fault/block and /v1/fault/heal, which cut this
	// node off from chosen peers with a connection gater (the fault
	// harness's fallback when it cannot use network namespaces).
	FaultAPI bool `json:"fault_api"`
	// Retention keeps signals per type pattern (node.Config.Retention),
	// config file only: [{"pattern": "sensor.**", "max_age": "1h"},
	// {"pattern": "**", "max_count": 1000000, "max_bytes": 10737418240}].
	Retention []retentionRule `json:"retention"`
}

type retentionRule struct {
	Pattern  string   `json:"pattern"`
	MaxAge   duration `json:"max_age"`
	MaxCount int      `json:"max_count"`
	MaxBytes int64    `json:"max_bytes"`
}

type params struct {
	MaxBatch        int      `json:"max_batch"`
	MaxBatchDelay   duration `json:"max_batch_delay"`
	CommitQueue     int      `json:"commit_queue"`
	JournalBatch    int      `json:"journal_batch"`
	JournalDelay    duration `json:"journal_delay"`
	CausalBuffer    int      `json:"causal_buffer"`
	OriginBuffer    int      `json:"origin_buffer"`
	SubscriberQueue int      `json:"subscriber_queue"`
	Resync          duration `json:"resync"`
	CauseTimeout    duration `json:"cause_timeout"`
	CauseWait       duration `json:"cause_wait"`
	DepWait         duration `json:"dep_wait"`
	MaxDeps         int      `json:"max_deps"`
	Rebroadcast     duration `json:"rebroadcast"`
	Redial          duration `json:"redial"`
	Discover        duration `json:"discover"`
	ConnLow         int      `json:"conn_low"`
	ConnHigh        int      `json:"conn_high"`
	ConnGrace       duration `json:"conn_grace"`
	MaxConns        int      `json:"max_conns"`
	Lease           duration `json:"lease"`
	GossipDegree    int      `json:"gossip_degree"` // node.Params.GossipDegree: GossipSub's mesh degree, default 4
	// Prune is how often signals past an age limit leave the disk
	// (node.Params.Prune; default a quarter of the shortest limit).
	Prune duration `json:"prune"`
}

type bridgeCfg struct {
	Cluster      string        `json:"cluster"` // default: the mesh name
	Tokens       []string      `json:"tokens"`  // accepted by the ingress
	Secret       string        `json:"secret"`  // accepted HMAC secret
	Routes       []routeCfg    `json:"routes"`
	Destinations []destination `json:"destinations"`
}

type routeCfg struct {
	Pattern     string `json:"pattern"`
	Consistency string `json:"consistency"` // eventual, weak, quorum:K, quorum-in-memory:K
}

type destination struct {
	Name       string   `json:"name"`
	URL        string   `json:"url"`
	Mode       string   `json:"mode"`
	BatchSize  int      `json:"batch_size"` // signals per request in batch mode (default 100)
	Patterns   []string `json:"patterns"`
	Token      string   `json:"token"`
	Secret     string   `json:"secret"`
	Cluster    string   `json:"cluster"`
	Timeout    duration `json:"timeout"`
	Attempts   int      `json:"attempts"`
	Backoff    duration `json:"backoff"`
	MaxBackoff duration `json:"max_backoff"`
	Failures   int      `json:"breaker_failures"`
	OpenFor    duration `json:"breaker_open_for"`
}

// duration is a time.Duration written as "250ms" in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// durationFlag is a duration flag that writes into a config field.
type durationFlag duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }
func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	*d = durationFlag(v)
	return err
}

// list is a comma-separated flag.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }
func (l *list) Set(s string) error {
	*l = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l = append(*l, f)
		}
	}
	return nil
}

// loadDaemonConfig reads the config file named by -config (or
// SIGNALMESH_CONFIG), then the environment, then the flags.
func loadDaemonConfig(fs *flag.FlagSet, args []string) (*daemonConfig, error) {
	c := &daemonConfig{HTTP: "127.0.0.1:7070", LogLevel: "info"}
	file := fs.String("config", "", "JSON config file (every field; flags and SIGNALMESH_* variables override it)")
	// The flags write into a second config, applied over the file and the
	// environment only for the flags actually given.
	var f daemonConfig
	fs.StringVar(&f.Mesh, "mesh", "", "mesh name (required): letters, digits, '.', '_', '-'")
	fs.StringVar(&f.DataDir, "data-dir", "", "directory for the identity, journal and bridge outboxes (empty: in memory)")
	fs.Var((*list)(&f.Listen), "listen", "libp2p listen multiaddrs, comma-separated (default TCP and QUIC on 127.0.0.1)")
	fs.Var((*list)(&f.Bootstrap), "bootstrap", "peers to dial at start, as multiaddrs ending in /p2p/<id>, comma-separated")
	fs.BoolVar(&f.MDNS, "mdns", false, "discover peers on the local network by multicast DNS")
	fs.BoolVar(&f.SnapshotJoin, "snapshot-join", false, "with an empty journal, start from a bootstrap peer's snapshot of what it retains instead of its whole history")
	fs.BoolVar(&f.Relay, "relay", false, "offer circuit relay service to peers behind NATs (for a node every peer can dial)")
	fs.Var((*list)(&f.Relays), "relays", "relay nodes to keep a reservation on, as multiaddrs ending in /p2p/<id>, comma-separated")
	fs.Var((*list)(&f.Announce), "announce", "addresses to tell peers instead of the listen addresses (a port mapping), comma-separated")
	fs.IntVar(&f.Params.ConnLow, "conn-low", 0, "connection manager low water (Params.ConnLow; default 160)")
	fs.IntVar(&f.Params.ConnHigh, "conn-high", 0, "connection manager high water (Params.ConnHigh; default 192)")
	fs.IntVar(&f.Params.MaxConns, "max-conns", 0, "hard connection limit of the resource manager (Params.MaxConns; default scaled to the machine)")
	fs.Var((*durationFlag)(&f.Params.ConnGrace), "conn-grace", "how long a new connection is safe from trims (Params.ConnGrace; default 1m)")
	fs.Var((*durationFlag)(&f.Params.Discover), "discover", "interval of address announcements, negative: off (Params.Discover; default 10s)")
	fs.StringVar(&f.PSK, "psk", "", "private network key, 64 hex digits (TCP only)")
	fs.Var((*list)(&f.Allow), "allow", "the only peer IDs to connect with, comma-separated")
	fs.StringVar(&f.HTTP, "http", "", "address of the HTTP API (default 127.0.0.1:7070)")
	fs.StringVar(&f.APIToken, "api-token", "", "bearer token the HTTP API requires (default: none; then -http must be a loopback address)")
	fs.BoolVar(&f.InsecureHTTP, "insecure-http", false, "serve the HTTP API on a non-loopback address without -api-token (anyone who reaches it can publish and read)")
	fs.Var((*list)(&f.HTTPHosts), "http-hosts", "host names the HTTP API answers to besides localhost and its IP addresses, comma-separated (other Host headers are refused)")
	fs.StringVar(&f.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&f.Bridge.Cluster, "cluster", "", "this cluster's name for bridging (default: the mesh name)")
	fs.Var((*list)(&f.Bridge.Tokens), "ingress-tokens", "bearer tokens the bridge ingress accepts, comma-separated")
	fs.StringVar(&f.Bridge.Secret, "ingress-secret", "", "HMAC secret the bridge ingress accepts")
	fs.StringVar(&f.Record, "record", "", "append every delivered signal matching -record-pattern to this file, one JSON line each (a persistent subscription)")
	fs.StringVar(&f.RecordPattern, "record-pattern", "", "pattern of -record (default **)")
	fs.StringVar(&f.RecordGroup, "record-group", "", "make the -record subscription (with -record-group-file, that file's) a member of this consumer group (each signal recorded by one member across the mesh)")
	fs.StringVar(&f.RecordStrategy, "record-strategy", "", "the -record-group's strategy: hash:ATTR (default hash:subject), balanced, local-first or broadcast")
	fs.StringVar(&f.RecordGroupFile, "record-group-file", "", "with -record-group: record this node's share of the group to this file instead (a member of its own, in -record's format, over -record-pattern, no -record-delay); -record then stays a plain subscription")
	fs.StringVar(&f.Region, "region", "", "the node's region tag, for consumer groups' local-first strategy")
	fs.Var((*durationFlag)(&f.Params.Lease), "lease", "lease of the node's entries in the subscription set: a dead consumer group member's share moves after it (Params.Lease; default 10s)")
	fs.StringVar(&f.RecordDelay, "record-delay", "", "make the -record handler slow: MIN-MAX, such as 300us-200ms, log-uniform per signal (fault injection)")
	fs.IntVar(&f.Params.CausalBuffer, "causal-buffer", 0, "signals that may wait for a cause (Params.CausalBuffer; default the node's)")
	fs.IntVar(&f.Params.SubscriberQueue, "subscriber-queue", 0, "signals queued per subscription (Params.SubscriberQueue; default the node's)")
	fs.BoolVar(&f.FaultAPI, "fault-api", false, "serve /v1/fault/block and /v1/fault/heal (fault injection; never on an exposed address)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *file == "" {
		*file = os.Getenv("SIGNALMESH_CONFIG")
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("config %s: %w", *file, err)
		}
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		if fl.Name == "config" || err != nil {
			return
		}
		val, ok := "", false
		if given[fl.Name] {
			val, ok = fl.Value.String(), true
		} else if v, set := os.LookupEnv("SIGNALMESH_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))); set {
			val, ok = v, true
		}
		if ok {
			err = c.set(fl.Name, val)
		}
	})
	return c, err
}

func (c *daemonConfig) set(name, v string) error {
	var l list
	_ = l.Set(v)
	switch name {
	case "mesh":
		c.Mesh = v
	case "data-dir":
		c.DataDir = v
	case "listen":
		c.Listen = l
	case "bootstrap":
		c.Bootstrap = l
	case "mdns":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("mdns: %w", err)
		}
		c.MDNS = b
	case "snapshot-join":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("snapshot-join: %w", err)
		}
		c.SnapshotJoin = b
	case "psk":
		c.PSK = v
	case "allow":
		c.Allow = l
	case "http":
		c.HTTP = v
	case "api-token":
		c.APIToken = v
	case "insecure-http":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("insecure-http: %w", err)
		}
		c.InsecureHTTP = b
	case "http-hosts":
		c.HTTPHosts = l
	case "log-level":
		c.LogLevel = v
	case "cluster":
		c.Bridge.Cluster = v
	case "ingress-tokens":
		c.Bridge.Tokens = l
	case "ingress-secret":
		c.Bridge.Secret = v
	case "record":
		c.Record = v
	case "record-pattern":
		c.RecordPattern = v
	case "record-delay":
		c.RecordDelay = v
	case "record-group":
		c.RecordGroup = v
	case "record-strategy":
		c.RecordStrategy = v
	case "record-group-file":
		c.RecordGroupFile = v
	case "region":
		c.Region = v
	case "lease":
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("lease: want a duration: %q", v)
		}
		c.Params.Lease = duration(d)
	case "causal-buffer", "subscriber-queue":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: want a count: %q", name, v)
		}
		if name == "causal-buffer" {
			c.Params.CausalBuffer = n
		} else {
			c.Params.SubscriberQueue = n
		}
	case "relay":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		c.Relay = b
	case "relays":
		c.Relays = l
	case "announce":
		c.Announce = l
	case "conn-low", "conn-high", "max-conns":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: want a count: %q", name, v)
		}
		switch name {
		case "conn-low":
			c.Params.ConnLow = n
		case "conn-high":
			c.Params.ConnHigh = n
		default:
			c.Params.MaxConns = n
		}
	case "conn-grace", "discover":
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if name == "conn-grace" {
			c.Params.ConnGrace = duration(d)
		} else {
			c.Params.Discover = duration(d)
		}
	case "fault-api":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("fault-api: %w", err)
		}
		c.FaultAPI = b
	}
	return nil
}

// nodeConfig turns the daemon config into a node.Config.
func (c *daemonConfig) nodeConfig() (node.Config, error) {
	nc := node.Config{Mesh: c.Mesh, DataDir: c.DataDir, ListenAddrs: c.Listen, MDNS: c.MDNS,
		RelayService: c.Relay, AnnounceAddrs: c.Announce, Region: c.Region, SnapshotJoin: c.SnapshotJoin}
	if c.Mesh == "" {
		return nc, errors.New("a mesh name is required (-mesh, SIGNALMESH_MESH or \"mesh\" in the config)")
	}
	for _, b := range c.Bootstrap {
		ai, err := peer.AddrInfoFromString(b)
		if err != nil {
			return nc, fmt.Errorf("bootstrap %q: %w", b, err)
		}
		nc.Bootstrap = append(nc.Bootstrap, *ai)
	}
	for _, r := range c.Relays {
		ai, err := peer.AddrInfoFromString(r)
		if err != nil {
			return nc, fmt.Errorf("relay %q: %w", r, err)
		}
		nc.Relays = append(nc.Relays, *ai)
	}
	if c.PSK != "" {
		k, err := hex.DecodeString(c.PSK)
		if err != nil || len(k) != 32 {
			return nc, errors.New("psk: want 64 hex digits")
		}
		nc.PSK = k
	}
	for _, a := range c.Allow {
		id, err := peer.Decode(a)
		if err != nil {
			return nc, fmt.Errorf("allow %q: %w", a, err)
		}
		nc.Allow = append(nc.Allow, id)
	}
	p := c.Params
	nc.Params = node.Params{MaxBatch: p.MaxBatch, MaxBatchDelay: time.Duration(p.MaxBatchDelay), CommitQueue: p.CommitQueue,
		JournalBatch: p.JournalBatch, JournalDelay: time.Duration(p.JournalDelay), CausalBuffer: p.CausalBuffer, OriginBuffer: p.OriginBuffer,
		SubscriberQueue: p.SubscriberQueue, Resync: time.Duration(p.Resync), CauseTimeout: time.Duration(p.CauseTimeout),
		Rebroadcast: time.Duration(p.Rebroadcast), Redial: time.Duration(p.Redial),
		CauseWait: time.Duration(p.CauseWait), DepWait: time.Duration(p.DepWait), MaxDeps: p.MaxDeps,
		Discover: time.Duration(p.Discover), ConnLow: p.ConnLow, ConnHigh: p.ConnHigh, ConnGrace: time.Duration(p.ConnGrace),
		MaxConns: p.MaxConns, Lease: time.Duration(p.Lease), Prune: time.Duration(p.Prune), GossipDegree: p.GossipDegree}
	for _, r := range c.Retention {
		nc.Retention = append(nc.Retention, journal.Rule{Pattern: r.Pattern, MaxAge: time.Duration(r.MaxAge), MaxCount: r.MaxCount, MaxBytes: r.MaxBytes})
	}
	return nc, nc.Validate()
}

// parseConsistency reads "eventual", "weak", "quorum:K" or
// "quorum-in-memory:K" (see node.QuorumInMemory).
func parseConsistency(s string) (node.Consistency, error) {
	switch s {
	case "", "eventual":
		return node.Eventual, nil
	case "weak":
		return node.Weak, nil
	}
	if k, ok := strings.CutPrefix(s, "quorum:"); ok {
		n, err := strconv.Atoi(k)
		if err == nil && n > 0 {
			return node.Quorum(n), nil
		}
	}
	if k, ok := strings.CutPrefix(s, "quorum-in-memory:"); ok {
		n, err := strconv.Atoi(k)
		if err == nil && n > 0 {
			return node.QuorumInMemory(n), nil
		}
	}
	return node.Eventual, fmt.Errorf("consistency %q: want eventual, weak, quorum:K or quorum-in-memory:K", s)
}

func (c *daemonConfig) destinations() ([]bridge.Destination, error) {
	var out []bridge.Destination
	for _, d := range c.Bridge.Destinations {
		if d.BatchSize < 0 {
			return nil, fmt.Errorf("destination %q: batch_size %d: want a positive count", d.Name, d.BatchSize)
		}
		out = append(out, bridge.Destination{Name: d.Name, URL: d.URL, Mode: bridge.Mode(d.Mode), BatchSize: d.BatchSize, Patterns: d.Patterns,
			Token: d.Token, Secret: []byte(d.Secret), Cluster: d.Cluster, Timeout: time.Duration(d.Timeout),
			Retry:   bridge.Retry{Attempts: d.Attempts, Backoff: time.Duration(d.Backoff), MaxBackoff: time.Duration(d.MaxBackoff)},
			Breaker: bridge.Breaker{Failures: d.Failures, OpenFor: time.Duration(d.OpenFor)}})
	}
	return out, nil
}
