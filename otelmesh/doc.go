// Package otelmesh carries OpenTelemetry traces through a mesh: a trace
// started where a signal is published continues where it is handled, on
// any peer.
//
// Publish (a node.PublishMiddleware) starts a producer span per publish and
// writes its W3C trace context into each signal as the CloudEvents
// distributed-tracing extensions traceparent and tracestate; Dispatch (a
// node.Middleware) reads them back and runs the handler in a consumer span
// whose parent is the publisher's span, so the handler's context carries
// the same trace id:
//
//	n, err := node.New(ctx, node.Config{Mesh: "shop",
//		PublishMiddleware:  []node.PublishMiddleware{otelmesh.Publish()},
//		DispatchMiddleware: []node.Middleware{otelmesh.Dispatch()},
//	})
//
// A signal that already carries traceparent (one that came over the HTTP
// bridge from a traced client) keeps it. Both use the global
// TracerProvider and TextMapPropagator of package otel unless given others.
package otelmesh
