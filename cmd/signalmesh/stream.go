package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func tailCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: signalmesh tail [flags] [PATTERN]

Prints every signal matching PATTERN (default **) as a running node delivers
it, one JSON CloudEvent a line, until interrupted or -n signals. When the
stream ends (the node restarts, the network drops), tail reconnects and
resumes after the last signal it printed (Last-Event-ID); the node keeps
the last 4,096 signals for that.

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	limit := fs.Int("n", 0, "exit after this many signals (0: run until interrupted)")
	reconnect := fs.Bool("reconnect", true, "reconnect when the stream ends, resuming after the last signal printed")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return helpOr2(err)
	}
	if len(pos) > 1 {
		fmt.Fprintln(stderr, "signalmesh tail: one pattern at most")
		return 2
	}
	pattern := "**"
	if len(pos) == 1 {
		pattern = pos[0]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := &tailer{cf: cf, path: "/v1/tail?pattern=" + url.QueryEscape(pattern), limit: *limit, stdout: stdout, stderr: stderr}
	backoff, ever := 100*time.Millisecond, false
	for {
		err := t.stream(ctx)
		if err == nil || ctx.Err() != nil {
			return 0 // -n reached, or interrupted
		}
		ever = ever || t.connected
		if !ever || !*reconnect {
			fmt.Fprintln(stderr, "signalmesh tail:", err)
			return 1
		}
		if t.connected { // a stream ended: say so once, until the next one opens
			t.connected, backoff = false, 100*time.Millisecond
			fmt.Fprintf(stderr, "signalmesh tail: %v; reconnecting after %q\n", err, t.lastID)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// tailer reads one node's event stream, and again after it ends, from
// the last event it printed.
type tailer struct {
	cf        clientFlags
	path      string
	limit     int
	printed   int
	lastID    string
	connected bool // the last stream was opened
	stdout    io.Writer
	stderr    io.Writer
}

// stream opens the stream and prints its signals. It returns nil once
// limit signals are printed, else why the stream ended.
func (t *tailer) stream(ctx context.Context) error {
	h := http.Header{"Accept": {"text/event-stream"}}
	if t.lastID != "" {
		h.Set("Last-Event-ID", t.lastID)
	}
	resp, err := t.cf.doHeader(ctx, http.MethodGet, t.path, nil, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	t.connected = true
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	id, event := "", ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "": // the end of an event
			id, event = "", ""
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "dropped":
			fmt.Fprintf(t.stderr, "signalmesh tail: %s signals dropped (reading too slowly)\n", strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, "data: ") && event == "reset":
			fmt.Fprintf(t.stderr, "signalmesh tail: the node restarted: %s\n", strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, "data: "):
			fmt.Fprintln(t.stdout, strings.TrimPrefix(line, "data: "))
			if id != "" {
				t.lastID = id
			}
			if t.printed++; t.limit > 0 && t.printed >= t.limit {
				return nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("the stream broke: %w", err)
	}
	return errors.New("the node closed the stream")
}

func replayCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: signalmesh replay [flags] [PATTERN]

Prints the signals matching PATTERN (default **) in a running node's
journal, in replay order (causes before effects; one order on every replica
with the same journal), one JSON CloudEvent a line, as the node streams
them. -after resumes a replay that was cut short: signals journaled since
may sort before that point. -limit prints at most that many and, when more
follow, the cursor to go on from on stderr (-cursor).

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	after := fs.String("after", "", "start after the first signal with this id")
	since := fs.String("since", "", "only signals whose time is not before this: RFC 3339, or a duration back from now such as 1h")
	cursor := fs.String("cursor", "", "go on from this cursor (a -limit replay prints it)")
	limit := fs.Int("limit", 0, "print at most this many signals (0: all)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return helpOr2(err)
	}
	if len(pos) > 1 {
		fmt.Fprintln(stderr, "signalmesh replay: one pattern at most")
		return 2
	}
	q := url.Values{"pattern": {"**"}, "format": {"ndjson"}}
	if *cursor != "" {
		q.Set("cursor", *cursor)
	}
	if *limit < 0 {
		fmt.Fprintln(stderr, "signalmesh replay: -limit must not be negative")
		return 2
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if len(pos) == 1 {
		q.Set("pattern", pos[0])
	}
	if *after != "" {
		q.Set("after", *after)
	}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			fmt.Fprintln(stderr, "signalmesh replay:", err)
			return 2
		}
		q.Set("since", t.Format(time.RFC3339Nano))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	resp, err := cf.do(ctx, http.MethodGet, "/v1/replay?"+q.Encode(), nil, "")
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh replay:", err)
		return 1
	}
	defer resp.Body.Close()
	next, more, err := printNDJSON(resp.Body, stdout, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintln(stderr, "signalmesh replay: the stream broke:", err)
		return 1
	}
	if more {
		fmt.Fprintf(stderr, "signalmesh replay: more follow: -cursor %s\n", next)
	}
	return 0
}

// printNDJSON prints the signal lines of a /v1/replay NDJSON stream as
// they are read, tells note of signals past retention, and returns its
// closing cursor line's cursor and more; a stream without one was cut
// short.
func printNDJSON(r io.Reader, w, note io.Writer) (cursor string, more bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var end struct { // keys with '_' are no CloudEvents attribute names (a-z, 0-9 only)
			Cursor *string `json:"next_cursor"`
			More   bool    `json:"more"`
			Past   int     `json:"past_retention"`
		}
		if json.Unmarshal(line, &end) == nil {
			if end.Cursor != nil {
				return *end.Cursor, end.More, nil
			}
			if end.Past > 0 {
				fmt.Fprintf(note, "signalmesh replay: %d signals here are past retention (left out)\n", end.Past)
				continue
			}
		}
		fmt.Fprintln(w, string(line))
	}
	if err := sc.Err(); err != nil {
		return "", false, err
	}
	return "", false, errors.New("the stream ended without its cursor line")
}

// parseSince reads an RFC 3339 time or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, fmt.Errorf("-since %q: want an RFC 3339 time or a duration such as 1h", s)
	}
	return t, nil
}

func digestCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("digest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: signalmesh digest [flags]

Prints a running node's journal digest and its number of entries, as
"DIGEST COUNT": nodes whose journals have converged print the same line.

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	if err := fs.Parse(args); err != nil {
		return helpOr2(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "signalmesh digest: no arguments")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cf.do(ctx, http.MethodGet, "/v1/digest", nil, "")
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh digest:", err)
		return 1
	}
	defer resp.Body.Close()
	var d struct {
		Count  int
		Digest string
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		fmt.Fprintln(stderr, "signalmesh digest:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %d\n", d.Digest, d.Count)
	return 0
}

// versionCmd prints the module version and VCS stamp the binary was built
// with (runtime/debug.ReadBuildInfo).
func versionCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "signalmesh version: no arguments")
		return 2
	}
	fmt.Fprintln(stdout, versionLine())
	return 0
}

func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "signalmesh (no build information) " + runtime.Version()
	}
	v := bi.Main.Version
	if v == "" {
		v = "(unknown)"
	}
	line := "signalmesh " + v
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		line += " " + rev[:min(12, len(rev))]
		if settings["vcs.modified"] == "true" {
			line += "+modified"
		}
		if t := settings["vcs.time"]; t != "" {
			line += " " + t
		}
	}
	return line + " " + bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
