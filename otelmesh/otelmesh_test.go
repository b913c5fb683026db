package otelmesh_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/node/nodetest"
	"github.com/signalmesh/signalmesh/otelmesh"
)

// A trace started on one peer continues in the handler on another: the
// handler's context has the publisher's trace id, and its span is a child
// of the publish span.
func TestTraceCrossesPeers(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	mesh := fmt.Sprintf("otel-%d", time.Now().UnixNano())
	var nodes [2]*node.Node
	for i := range nodes {
		n, err := node.New(context.Background(), node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
			PublishMiddleware:  []node.PublishMiddleware{otelmesh.Publish(otelmesh.WithTracerProvider(tp))},
			DispatchMiddleware: []node.Middleware{otelmesh.Dispatch(otelmesh.WithTracerProvider(tp))}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		nodes[i] = n
	}
	a, b := nodes[0], nodes[1]
	got := make(chan trace.SpanContext, 1)
	if _, err := b.Subscribe("order.*", func(ctx context.Context, _ *signalmesh.Signal) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}

	ctx, root := tp.Tracer("test").Start(ctx, "checkout")
	s, _ := signalmesh.New("order.created", "/shop", nil)
	if err := a.Publish(ctx, s); err != nil {
		t.Fatal(err)
	}
	root.End()
	if _, ok := s.Extensions[otelmesh.ExtTraceParent]; ok {
		t.Fatal("the caller's signal was modified")
	}
	var sc trace.SpanContext
	select {
	case sc = <-got:
	case <-ctx.Done():
		t.Fatal("not delivered on the other peer")
	}
	if sc.TraceID() != root.SpanContext().TraceID() {
		t.Fatalf("handler's trace %s, publisher's %s", sc.TraceID(), root.SpanContext().TraceID())
	}
	var publish, process sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		switch sp.Name() {
		case "publish":
			publish = sp
		case "process order.created":
			process = sp
		}
	}
	if publish == nil || publish.Parent().SpanID() != root.SpanContext().SpanID() || publish.SpanKind() != trace.SpanKindProducer {
		t.Fatalf("publish span %v", publish)
	}
	// The process span ends after the handler returns: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for process == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		for _, sp := range rec.Ended() {
			if sp.Name() == "process order.created" {
				process = sp
			}
		}
	}
	if process == nil || process.Parent().SpanID() != publish.SpanContext().SpanID() || !process.Parent().IsRemote() ||
		process.SpanContext().SpanID() != sc.SpanID() || process.SpanKind() != trace.SpanKindConsumer {
		t.Fatalf("process span %v", process)
	}
}

// A retry of the same event is traced anew, and is still the same event:
// publishing it again through the middleware is idempotent, not a
// conflict (the tracing extensions are not part of its content).
func TestRetryThroughMiddlewareIsIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	n, err := node.New(context.Background(), node.Config{Mesh: "otel-retry", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ListenAddrs:       []string{"/ip4/127.0.0.1/tcp/0"},
		PublishMiddleware: []node.PublishMiddleware{otelmesh.Publish(otelmesh.WithTracerProvider(tp))}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s, err := signalmesh.New("order.placed", "/shop", map[string]any{"n": 1}, signalmesh.WithID("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	for try := range 2 {
		if err := n.Publish(context.Background(), s); err != nil {
			t.Fatalf("try %d: %v", try+1, err)
		}
	}
	st, err := n.Status(context.Background())
	if err != nil || st.Published != 1 && st.Deduped == 0 {
		t.Fatalf("status %+v, %v", st, err)
	}
}
