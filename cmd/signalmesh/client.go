package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strings"
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
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	return c.doHeader(ctx, method, path, body, h)
}

// doHeader sends a request with these headers; an answer other than 2xx
// is an error that quotes the node's message.
func (c clientFlags) doHeader(ctx context.Context, method, path string, body []byte, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*c.node, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	maps.Copy(req.Header, h)
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
		fmt.Fprint(stderr, `Usage: signalmesh publish [flags] TYPE [DATA]
       signalmesh publish [flags] -type TYPE [-data JSON]
       signalmesh publish [flags] -file EVENT.json   (a CloudEvent in JSON; - for stdin)

Publishes a signal through a running node and prints its id. DATA is sent
as JSON when it is valid JSON, else as text. Flags may come before or after
TYPE and DATA.

Flags:
`)
		fs.PrintDefaults()
	}
	cf := addClientFlags(fs)
	typ := fs.String("type", "", "signal type, e.g. order.eu.created (or the first argument)")
	source := fs.String("source", "/signalmesh/cli", "source URI")
	subject := fs.String("subject", "", "subject")
	data := fs.String("data", "", "data, JSON (or the second argument)")
	cause := fs.String("cause", "", "id of the signal that caused this one")
	file := fs.String("file", "", "a CloudEvent in JSON to publish instead (- for stdin)")
	consistency := fs.String("consistency", "eventual", "eventual, weak, quorum:K or quorum-in-memory:K")
	count := fs.Int("count", 1, "publish this many signals, each with its own id (up to 1,000 a request)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return helpOr2(err)
	}
	var posData *string
	switch {
	case len(pos) > 2:
		fmt.Fprintln(stderr, "signalmesh publish: at most two arguments, TYPE and DATA")
		return 2
	case len(pos) > 0 && (*typ != "" || *file != "" || *data != ""):
		fmt.Fprintln(stderr, "signalmesh publish: give TYPE [DATA] as arguments or as -type/-data, not both")
		return 2
	case len(pos) == 2:
		posData = &pos[1]
		fallthrough
	case len(pos) == 1:
		*typ = pos[0]
	}
	if (*file == "") == (*typ == "") {
		fmt.Fprintln(stderr, "signalmesh publish: give TYPE (or -type) or -file")
		return 2
	}
	if *count < 1 || (*file != "" && *count != 1) {
		fmt.Fprintln(stderr, "signalmesh publish: -count must be at least 1, and 1 with -file (its one id)")
		return 2
	}
	if _, err := parseConsistency(*consistency); err != nil {
		fmt.Fprintln(stderr, "signalmesh publish:", err)
		return 2
	}
	var bodies [][]byte
	var ctype string
	if *file != "" {
		var body []byte
		if *file == "-" {
			body, err = io.ReadAll(os.Stdin)
		} else {
			body, err = os.ReadFile(*file)
		}
		bodies, ctype = [][]byte{body}, "application/cloudevents+json"
	} else {
		var d any
		switch {
		case posData != nil && json.Valid([]byte(*posData)):
			d = json.RawMessage(*posData)
		case posData != nil:
			d = *posData
		case *data != "":
			if !json.Valid([]byte(*data)) {
				fmt.Fprintln(stderr, "signalmesh publish: -data is not valid JSON")
				return 2
			}
			d = json.RawMessage(*data)
		}
		opts := []signalmesh.Option{}
		if *subject != "" {
			opts = append(opts, signalmesh.WithSubject(*subject))
		}
		if *cause != "" {
			opts = append(opts, signalmesh.WithCauseID(*cause))
		}
		bodies, ctype, err = publishBodies(*typ, *source, d, opts, *count)
	}
	if err != nil {
		fmt.Fprintln(stderr, "signalmesh publish:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, body := range bodies {
		ids, err := cf.publish(ctx, *consistency, body, ctype)
		if err != nil {
			fmt.Fprintln(stderr, "signalmesh publish:", err)
			return 1
		}
		for _, id := range ids {
			fmt.Fprintln(stdout, id)
		}
	}
	return 0
}

// publishBodies makes count signals, as one structured CloudEvent or as
// batches of up to 1,000.
func publishBodies(typ, source string, data any, opts []signalmesh.Option, count int) ([][]byte, string, error) {
	var sigs []*signalmesh.Signal
	for range count {
		s, err := signalmesh.New(typ, source, data, opts...)
		if err != nil {
			return nil, "", err
		}
		sigs = append(sigs, s)
	}
	if count == 1 {
		b, err := sigs[0].MarshalJSON()
		return [][]byte{b}, "application/cloudevents+json", err
	}
	var bodies [][]byte
	for len(sigs) > 0 {
		k := min(len(sigs), 1000)
		b, err := json.Marshal(sigs[:k])
		if err != nil {
			return nil, "", err
		}
		bodies, sigs = append(bodies, b), sigs[k:]
	}
	return bodies, "application/cloudevents-batch+json", nil
}

func (c clientFlags) publish(ctx context.Context, consistency string, body []byte, ctype string) ([]string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/publish?consistency="+url.QueryEscape(consistency), body, ctype)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct{ IDs []string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return out.IDs, nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns those.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		rest := fs.Args()
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil // everything after -- is an argument
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
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
