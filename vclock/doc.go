// Package vclock provides vector clocks and a causal-delivery buffer.
//
// A Clock counts, per peer, the events that peer made and that the holder
// has seen. Compare tells whether one clock happened Before, After, Equal to
// or Concurrent with another; Merge takes the entry-wise maximum. Clocks are
// immutable values with a canonical compact binary form (MarshalBinary), a
// base64url text form (MarshalText, carried in a signal's meshclock
// extension) and a JSON object form.
//
// A Buffer takes items that arrive out of order, each with its origin peer and
// the origin's clock, and releases them in causal order: no item before one
// that happened before it. It is bounded (ErrFull when full, never silent
// growth) and reports what it is waiting for (Missing) so a caller can fetch it.
//
// The package is pure: no goroutines, no I/O, no wall clock.
package vclock
