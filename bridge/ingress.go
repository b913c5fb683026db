package bridge

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/router"
)

// Loop prevention: a signal that crosses a bridge carries the cluster it
// was first published in and how many bridges it crossed.
const (
	ExtCluster = "meshcluster" // string: the origin cluster
	ExtHops    = "meshhops"    // integer: bridges crossed
)

// Publisher is what the ingress publishes into: a *node.Node.
type Publisher interface {
	PublishWith(ctx context.Context, c node.Consistency, sigs ...*signalmesh.Signal) error
}

// IngressRoute gives the signals whose type matches Pattern a consistency.
type IngressRoute struct {
	Pattern     string
	Consistency node.Consistency
}

// IngressConfig configures an Ingress.
type IngressConfig struct {
	// Cluster names this cluster; signals that originated here and come
	// back are dropped. Required.
	Cluster string
	// Tokens are the bearer tokens accepted (Authorization: Bearer <t>).
	Tokens []string
	// Secret, when set, accepts requests signed with it (SignatureHeader),
	// within MaxAge (default DefaultMaxAge).
	Secret []byte
	MaxAge time.Duration
	// Anonymous accepts requests with no credentials. Off by default: an
	// ingress with no Tokens, no Secret and not Anonymous refuses to start.
	Anonymous bool
	// Routes give consistency by type, first match wins; unmatched signals
	// are Eventual.
	Routes []IngressRoute
	// MaxHops drops signals that crossed this many bridges. Default 8.
	MaxHops int
	// Limits for each signal; MaxBody bounds a request body (default 8 MiB).
	Limits  signalmesh.Limits
	MaxBody int64
	Logger  *slog.Logger
}

// Ingress is an http.Handler that publishes CloudEvents posted to it
// (structured, binary or batch mode) into a mesh. It answers 202 with
// {"accepted":n,"loops":k} once the signals are published with their
// route's consistency; 401 without valid credentials, 405 for a method
// other than POST, 413 for a body over MaxBody, 415 for a body that is no
// CloudEvent, 400 for a malformed or invalid event, 503 when the node is
// closed, 504 when a Quorum publish timed out. A refused request publishes
// nothing. Publishing is idempotent by signal id, so a retried delivery
// never publishes twice.
type Ingress struct {
	cfg IngressConfig
	pub Publisher
	log *slog.Logger

	mu       sync.Mutex
	accepted int64
	loops    int64
	refused  map[int]int64
}

// NewIngress returns an ingress publishing into pub.
func NewIngress(pub Publisher, cfg IngressConfig) (*Ingress, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("bridge: IngressConfig.Cluster is required")
	}
	if len(cfg.Tokens) == 0 && len(cfg.Secret) == 0 && !cfg.Anonymous {
		return nil, errors.New("bridge: ingress has no Tokens and no Secret; set Anonymous to accept anyone")
	}
	for _, r := range cfg.Routes {
		if err := router.Validate(r.Pattern); err != nil {
			return nil, fmt.Errorf("bridge: ingress route: %w", err)
		}
	}
	if err := cfg.Limits.Check(); err != nil {
		return nil, err
	}
	if cfg.MaxHops <= 0 {
		cfg.MaxHops = 8
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 8 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Ingress{cfg: cfg, pub: pub, log: log, refused: map[int]int64{}}, nil
}

// IngressStats counts what an ingress did.
type IngressStats struct {
	Accepted int64         `json:"accepted"` // signals published
	Loops    int64         `json:"loops"`    // signals dropped as looped back or over MaxHops
	Refused  map[int]int64 `json:"refused"`  // requests refused, by status
}

// Stats returns the ingress's counts.
func (in *Ingress) Stats() IngressStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := IngressStats{Accepted: in.accepted, Loops: in.loops, Refused: map[int]int64{}}
	for k, v := range in.refused {
		st.Refused[k] = v
	}
	return st
}

func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, loops, err := in.serve(r)
	if err != nil {
		var re *RequestError
		if !errors.As(err, &re) {
			re = &RequestError{Status: http.StatusInternalServerError, Msg: err.Error()}
		}
		in.mu.Lock()
		in.refused[re.Status]++
		in.mu.Unlock()
		if re.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="signalmesh"`)
		}
		writeJSON(w, re.Status, map[string]string{"error": re.Msg})
		return
	}
	in.mu.Lock()
	in.accepted += int64(n)
	in.loops += int64(loops)
	in.mu.Unlock()
	writeJSON(w, http.StatusAccepted, map[string]int{"accepted": n, "loops": loops})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (in *Ingress) serve(r *http.Request) (published, loops int, err error) {
	if r.Method != http.MethodPost {
		return 0, 0, reqErr(http.StatusMethodNotAllowed, "POST CloudEvents here")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, in.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return 0, 0, reqErr(http.StatusRequestEntityTooLarge, "body over %d bytes", in.cfg.MaxBody)
		}
		return 0, 0, reqErr(http.StatusBadRequest, "reading body: %v", err)
	}
	if err := in.authenticate(r, body); err != nil {
		return 0, 0, err
	}
	sigs, _, err := ReadSignals(r.Header, body, in.cfg.Limits)
	if err != nil {
		return 0, 0, err
	}
	groups := map[node.Consistency][]*signalmesh.Signal{}
	var order []node.Consistency
	for _, s := range sigs {
		origin, _ := s.Extensions[ExtCluster].(string)
		if origin == in.cfg.Cluster || Hops(s) >= in.cfg.MaxHops {
			loops++
			continue
		}
		if origin == "" {
			// From a producer outside any cluster: it enters the mesh here.
			_ = s.SetExtension(ExtCluster, in.cfg.Cluster)
		}
		c := in.consistency(s.Type)
		if _, ok := groups[c]; !ok {
			order = append(order, c)
		}
		groups[c] = append(groups[c], s)
	}
	for _, c := range order {
		if err := in.pub.PublishWith(r.Context(), c, groups[c]...); err != nil {
			switch {
			case errors.Is(err, node.ErrClosed):
				return published, loops, reqErr(http.StatusServiceUnavailable, "node closed")
			case errors.Is(err, node.ErrQuorum):
				return published, loops, reqErr(http.StatusGatewayTimeout, "%v", err)
			}
			return published, loops, reqErr(http.StatusBadRequest, "publish: %v", err)
		}
		published += len(groups[c])
	}
	return published, loops, nil
}

func (in *Ingress) consistency(typ string) node.Consistency {
	for _, r := range in.cfg.Routes {
		if router.Matches(r.Pattern, typ) {
			return r.Consistency
		}
	}
	return node.Eventual
}

func (in *Ingress) authenticate(r *http.Request, body []byte) error {
	if auth := r.Header.Get("Authorization"); auth != "" {
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if ok {
			for _, t := range in.cfg.Tokens {
				if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
					return nil
				}
			}
		}
		if len(in.cfg.Secret) == 0 || r.Header.Get(SignatureHeader) == "" {
			return reqErr(http.StatusUnauthorized, "bearer token not accepted")
		}
	}
	if sig := r.Header.Get(SignatureHeader); sig != "" && len(in.cfg.Secret) > 0 {
		if err := Verify(in.cfg.Secret, sig, body, time.Now(), in.cfg.MaxAge); err != nil {
			return reqErr(http.StatusUnauthorized, "%v", err)
		}
		return nil
	}
	if in.cfg.Anonymous {
		return nil
	}
	return reqErr(http.StatusUnauthorized, "credentials required: Authorization: Bearer <token> or %s", SignatureHeader)
}

// Hops returns how many bridges a signal crossed (ExtHops, an integer or,
// after a binary-mode hop, its decimal string).
func Hops(s *signalmesh.Signal) int {
	switch v := s.Extensions[ExtHops].(type) {
	case int32:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}
