package otelmesh

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// The CloudEvents distributed-tracing extensions.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

const scope = "github.com/signalmesh/signalmesh/otelmesh"

// Option configures Publish and Dispatch.
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets the provider of the spans. Default: otel's global one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithPropagator sets how the trace context is written into and read from
// a signal's extensions. Default: otel's global TextMapPropagator if it
// is set, else W3C trace context.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.prop == nil {
		c.prop = otel.GetTextMapPropagator()
		if len(c.prop.Fields()) == 0 { // the global default is a no-op
			c.prop = propagation.TraceContext{}
		}
	}
	return c
}

// carrier reads and writes a signal's string extensions.
type carrier struct{ s *signalmesh.Signal }

func (c carrier) Get(key string) string {
	v, _ := c.s.Extensions[key].(string)
	return v
}

func (c carrier) Set(key, value string) {
	if value != "" {
		_ = c.s.SetExtension(key, value)
	}
}

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c.s.Extensions))
	for k := range c.s.Extensions {
		keys = append(keys, k)
	}
	return keys
}

// Publish returns a publish middleware that starts a producer span named
// "publish" for every publish and writes the trace context into each
// signal that has no traceparent yet. The caller's signals are not
// modified: those that get the extensions are copies.
func Publish(opts ...Option) node.PublishMiddleware {
	c := newConfig(opts)
	tracer := c.tp.Tracer(scope)
	return func(next node.PublishFunc) node.PublishFunc {
		return func(ctx context.Context, cons node.Consistency, sigs []*signalmesh.Signal) error {
			ctx, span := tracer.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(attribute.String("messaging.system", "signalmesh"),
					attribute.String("signalmesh.consistency", cons.String()),
					attribute.Int("messaging.batch.message_count", len(sigs))))
			defer span.End()
			out := make([]*signalmesh.Signal, len(sigs))
			for i, s := range sigs {
				out[i] = s
				if _, ok := s.Extensions[ExtTraceParent]; ok {
					continue
				}
				cp := s.Clone()
				c.prop.Inject(ctx, carrier{cp})
				out[i] = cp
			}
			err := next(ctx, cons, out)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}

// Dispatch returns a dispatch middleware that runs each handling in a
// consumer span named "process <type>", a child of the trace context the
// signal carries (a root span when it carries none). The handler's context
// holds the span; its error is recorded on it.
func Dispatch(opts ...Option) node.Middleware {
	c := newConfig(opts)
	tracer := c.tp.Tracer(scope)
	return func(next node.Handler) node.Handler {
		return func(ctx context.Context, s *signalmesh.Signal) error {
			ctx = c.prop.Extract(ctx, carrier{s})
			ctx, span := tracer.Start(ctx, "process "+s.Type, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attribute.String("messaging.system", "signalmesh"),
					attribute.String("messaging.message.id", s.ID),
					attribute.String("cloudevents.event_id", s.ID),
					attribute.String("cloudevents.event_source", s.Source),
					attribute.String("cloudevents.event_type", s.Type)))
			defer span.End()
			err := next(ctx, s)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}
