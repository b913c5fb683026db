package main

import (
	"bufio"
	"bytes"
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
	"strings"
	"syscall"
	"time"

	"github.com/signalmesh/signalmesh"
)

// client flags shared by publish, tail and status.
type clientFlags struct {
	node  *string
	token *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	def := os.Getenv("SIGNALMESH_NODE")
	if def == "" {
		def = "http://127.0.0.1:7070"
	}
	return clientFlags{
		node:  fs.String("node", def, "the node's HTTP API (or SIGNALMESH_NODE)"),
		token: fs.String("token", os.Getenv("SIGNALMESH_API_TOKEN"), "the API's bearer token (or SIGNALMESH_API_TOKEN)"),
	}
}

func (c clientFlags) do(ctx context.Context, method, path string, body []byte, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*c.node, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if *c.token != "" {
		req.Header.Set("Authorization", "Bearer "+*c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node unreachable at %s: %w", *c.node, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct{ Error string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("node answered %s: %s", resp.Status, e.Error)
	}
	return resp, nil
}

func publishCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: signalmesh publish [flags] -type TYPE [-data JSON]
       signalmesh publish [flags] -file EVENT.json   (a CloudEvent in JSON; - for stdin)

Publishes one signal through a running node and prints its id.

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	typ := fs.String("type", "", "signal type, e.g. order.eu.created")
	source := fs.String("source", "/signalmesh/cli", "source URI")
	subject := fs.String("subject", "", "subject")
	data := fs.String("data", "", "data, JSON")
	cause := fs.String("cause", "", "id of the signal that caused this one")
	file := fs.String("file", "", "a CloudEvent in JSON to publish instead (- for stdin)")
	consistency := fs.String("consistency", "eventual", "eventual, weak or quorum:K")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || (*file == "") == (*typ == "") {
		fmt.Fprintln(stderr, "signalmesh publish: give -type (with optional -data) or -file, and no arguments")
		return 2
	}
	if _, err := parseConsistency(*consistency); err != nil {
		fmt.Fprintln(stderr, "signalmesh publish:", err)
		return 2
	}
	var body []byte
	var err error
	if *file != "" {
		if *file == "-" {
			body, err = io.ReadAll(os.Stdin)
		} else {
			body, err = os.ReadFile(*file)
		}
	} else {
		var d any
		if *data != "" {
			d = json.RawMessage(*data)
			if !json.Valid([]byte(*data)) {
				fmt.Fprintln(stderr, "signalmesh publish: -data is not valid JSON")
				return 2
			}
		}
		opts := []signalmesh.Option{}
		if *subject != "" {
			opts = append(opts, signalmesh.WithSubject(*subject))
		}
		if *cause != "" {
			opts = append(opts, signalmesh.WithCauseID(*cause))
		}
		var s *signalmesh.Signal
		if s, err = signalmesh.New(*typ, *source, d, opts...); err == nil {
			body, err = s.MarshalJSON()
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh publish:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := cf.do(ctx, http.MethodPost, "/v1/publish?consistency="+url.QueryEscape(*consistency), body, "application/cloudevents+json")
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh publish:", err)
		return 1
	}
	defer resp.Body.Close()
	var out struct{ IDs []string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Fprintln(stderr, "signalmesh publish: reading the answer:", err)
		return 1
	}
	for _, id := range out.IDs {
		fmt.Fprintln(stdout, id)
	}
	return 0
}

func tailCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: signalmesh tail [flags] [PATTERN]

Prints every signal matching PATTERN (default **) as a running node delivers
it, one JSON CloudEvent a line, until interrupted or -n signals.

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	limit := fs.Int("n", 0, "exit after this many signals (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "signalmesh tail: one pattern at most")
		return 2
	}
	pattern := fs.Arg(0)
	if pattern == "" {
		pattern = "**"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	resp, err := cf.do(ctx, http.MethodGet, "/v1/tail?pattern="+url.QueryEscape(pattern), nil, "")
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh tail:", err)
		return 1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	n, event := 0, ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "dropped":
			fmt.Fprintf(stderr, "signalmesh tail: %s signals dropped (reading too slowly)\n", strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, "data: "):
			fmt.Fprintln(stdout, strings.TrimPrefix(line, "data: "))
			if n++; *limit > 0 && n >= *limit {
				return 0
			}
		}
	}
	if ctx.Err() != nil {
		return 0 // interrupted
	}
	fmt.Fprintln(stderr, "signalmesh tail: the node closed the stream")
	return 1
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: signalmesh status [flags]\n\nPrints a running node's status as JSON.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "signalmesh status: no arguments")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cf.do(ctx, http.MethodGet, "/v1/status", nil, "")
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh status:", err)
		return 1
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		fmt.Fprintln(stderr, "signalmesh status:", err)
		return 1
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(stdout, string(b))
	return 0
}
