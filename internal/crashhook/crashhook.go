// Package crashhook lets this module's benchmarks and harnesses close a
// node as a kill -9 would (no hand-off, no final marks, leases left to run
// out) without a public API for it: package node sets Close when it is
// loaded.
package crashhook

// Close closes a *node.Node leaving what a kill -9 would. It panics on
// anything else.
var Close func(n any) error
