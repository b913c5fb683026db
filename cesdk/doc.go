// Package cesdk converts between signalmesh signals and events of the
// official CloudEvents Go SDK (github.com/cloudevents/sdk-go/v2), so that a
// service that already speaks CloudEvents through the SDK can publish into a
// mesh and handle what it delivers without re-encoding by hand.
//
// ToEvent and FromEvent keep every attribute (id, source, specversion, type,
// subject, time, datacontenttype, dataschema), the data bytes in every data
// mode (JSON inline, text, binary as base64), and every extension. The
// package is not named cloudevents so that it does not collide with the
// SDK's own package of that name in the caller's imports.
//
// # Types of extension values
//
// A signal's extensions are string, bool or int32, the types CloudEvents
// JSON carries natively. The SDK also has Binary, URI, URI-reference and
// Timestamp values; FromEvent turns those into their canonical CloudEvents
// string form (base64, the URI text, RFC 3339 in UTC), which is also how
// every CloudEvents transport carries them on the wire.
//
// The three HTTP modes of the SDK keep each value's type as follows:
// structured and batch mode (JSON) keep string, bool and int32; binary mode
// carries every extension in a ce-* header, and a header has no type, so the
// SDK reads int32 and bool extensions back as their string form ("5",
// "true"). signalmesh's own extensions are strings and survive every mode.
//
// # Time
//
// The SDK writes times in UTC: a signal whose time has another UTC offset
// comes back through any HTTP mode as the same instant in UTC.
package cesdk
