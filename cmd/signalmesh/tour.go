package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/router"
	"github.com/signalmesh/signalmesh/vclock"
)

// published is a signal with the clock its publisher stamped on it.
type published struct {
	origin string
	clock  vclock.Clock
	sig    *signalmesh.Signal
}

// tour plays a small conversation between three peers in memory: each
// publishes after seeing what came before, the signals reach a fourth peer in
// a shuffled order, and its causal buffer and router deliver them in an
// order that never puts an effect before its cause.
func tour(w io.Writer, seed uint64) error {
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	clocks := map[string]vclock.Clock{}
	var log []published
	publish := func(peer, typ string, cause *published, data any) (*published, error) {
		opts := []signalmesh.Option{signalmesh.WithTime(at), signalmesh.WithExtension(signalmesh.ExtPeer, peer)}
		if cause != nil {
			opts = append(opts, signalmesh.WithCause(cause.sig))
			clocks[peer] = clocks[peer].Merge(cause.clock) // the peer saw the cause
		}
		clocks[peer] = clocks[peer].Increment(peer)
		text, _ := clocks[peer].MarshalText()
		opts = append(opts, signalmesh.WithExtension("democlock", string(text)))
		s, err := signalmesh.New(typ, "/demo/"+peer, data, opts...)
		if err != nil {
			return nil, err
		}
		p := &published{origin: peer, clock: clocks[peer], sig: s}
		log = append(log, *p)
		return p, nil
	}

	order, err := publish("eu", "order.eu.created", nil, map[string]any{"order": "o-1", "total": 120})
	if err != nil {
		return err
	}
	pay, err := publish("us", "payment.card.captured", order, map[string]any{"order": "o-1"})
	if err != nil {
		return err
	}
	if _, err := publish("ap", "order.eu.shipped", pay, map[string]any{"order": "o-1"}); err != nil {
		return err
	}
	if _, err := publish("us", "user.u-9.updated", nil, "new e-mail"); err != nil {
		return err
	}
	if _, err := publish("eu", "fraud.alert.raised", order, map[string]any{"score": 0.2}); err != nil {
		return err
	}

	r := router.New[string]()
	for _, rt := range []struct {
		pattern, target string
		prio            int
	}{{"order.**", "fulfilment", 0}, {"**.captured", "ledger", 0}, {"fraud.*.*", "security", 50}, {"**", "audit", -100}} {
		if err := r.Add(rt.pattern, rt.target, router.WithPriority(rt.prio)); err != nil {
			return err
		}
	}

	arrival := append([]published(nil), log...)
	rand.New(rand.NewPCG(seed, seed)).Shuffle(len(arrival), func(i, j int) { arrival[i], arrival[j] = arrival[j], arrival[i] })
	fmt.Fprintln(w, "signals reach peer \"edge\" in this order:")
	for _, p := range arrival {
		fmt.Fprintf(w, "  %-22s from %s, clock %v\n", p.sig.Type, p.origin, p.clock)
	}
	buf, err := vclock.NewBuffer[*signalmesh.Signal](len(arrival), vclock.Clock{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\n\"edge\" delivers them in causal order, routed by type:")
	for _, p := range arrival {
		out, err := buf.Add(p.origin, p.clock, p.sig)
		if err != nil {
			return err
		}
		if len(out) == 0 {
			fmt.Fprintf(w, "  (holds %s: waiting for %v)\n", p.sig.Type, buf.Missing())
		}
		for _, s := range out {
			cause := ""
			if c := s.CauseID(); c != "" {
				cause = "  (effect of " + typeOf(log, c) + ")"
			}
			fmt.Fprintf(w, "  %-22s -> %v%s\n", s.Type, r.Route(s), cause)
		}
	}
	if buf.Len() != 0 {
		return fmt.Errorf("%d signals never delivered", buf.Len())
	}
	fmt.Fprintf(w, "\nall %d delivered; edge's clock is %v\n", len(log), buf.Delivered())
	return nil
}

func typeOf(log []published, id string) string {
	for _, p := range log {
		if p.sig.ID == id {
			return p.sig.Type
		}
	}
	return id
}
