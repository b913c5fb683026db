// Package journal is the replicated signal log: signals stored by their
// place (origin, sequence) in a go-datastore (in a mesh, the Merkle-CRDT
// store), found by id through an index kept in the same store, read back as
// cause→effect chains, or replayed in one deterministic causal order that
// is the same on every replica holding the same signals.
//
// # Keys
//
// A signal is one entry (in the replicated store) and one or two index
// entries (IndexEntries, in a store of the replica's own, which a node
// writes as signals reach its journal and rewrites after a crash):
//
//	/s/<peer ref>/<sequence, 16 hex digits>            → the signal's binary wire form
//	/i/<id, base64url>/<peer ref>.<sequence hex>       → content digest (8 bytes) + source
//	/e/<cause id, base64url>/<peer ref>.<sequence hex> → empty (a signal with a causeid only)
//
// The second (the effects index) lists the places of an id's direct
// effects: Effects and Trace read those signals only, not the journal. A
// node's index store that predates it (no index-version mark, see package
// node) gets its effects entries in one pass over the journal at start.
//
// The index is local because every key in a go-ds-crdt store costs several
// reads and writes on every replica; a local index entry costs one write.
// A journal held in memory keeps its index in a MemIndex instead (the same
// entries, in maps: NewWithMemIndex): a map-backed datastore answers a
// lookup by prefix by visiting every key it holds.
// Keys by place never collide: two different signals with one id (two
// sources, or a conflicting retry) are two entries, and every (origin,
// sequence) a replica learns of stays resolvable. go-ds-crdt keeps one
// value per key (the highest DAG node's), so a key by id alone would hide
// one of them for good.
//
// # Bounded history (design; issue 15)
//
// A service that embeds a node runs for months, and today every cost that
// follows the journal grows with everything ever published: disk (go-ds-crdt
// keeps every delta), the time and memory a restart takes, and the time a
// new peer takes to catch up. The goal is that each follows what is
// retained, not what was ever published. What is built and what is still
// design is marked below; the measurements are in BENCHMARKS.md.
//
// Built (package node and package crdt), short of the epochs below:
//
//   - Pruning: each node deletes from its own store the signals past an age
//     limit that it has delivered, and the journal blocks all of whose
//     entries are such signals, from the oldest up (a block goes only with
//     every block below it, so a walk that stops at a pruned block misses
//     nothing retained; go-ds-crdt's mark that a block was merged stays, so
//     no walk asks for it again). Nothing is replicated: every replica
//     prunes by the same rule, from each signal's own time. Disk then
//     follows what is retained, plus the blocks above a block that holds a
//     signal still retained, plus a few dozen bytes per block ever merged.
//   - Snapshot join: a fresh node copies a bootstrap peer's retained
//     entries, causal state and merged-block list (checked entry by entry,
//     the state bounded by what the entries prove), and walks only the
//     blocks written since.
//   - Checkpoints: a start after a crash restores the causal state the
//     node wrote before its last prune (or at its snapshot join) instead
//     of replaying the journal from each origin's first signal, which it
//     no longer holds.
//
// What that leaves to the epochs of the design: the merged marks grow with
// every block ever written (about 40 bytes each, a block per journal batch
// per publishing peer); a signal kept by a long rule holds every block
// above it on disk (the epochs' base carries such signals over, and the
// old blocks go); no record of the cut is agreed mesh-wide (each replica
// decides from the signal's time and its own clock); and rules by count
// or bytes bound the views only.
//
// Retention. A mesh has retention rules, each a router pattern over the
// signal type with a limit by age, by count or by bytes (any combination;
// the first that a signal's type matches applies, a rule with the pattern
// "**" last is the default; no rule: keep everything, today's behaviour):
//
//	sensor.**  age 1h
//	order.**   age 2160h (90 days)
//	**         age 168h, bytes 10 GiB
//
// A signal is retained while its rule keeps it. Age is measured from the
// signal's time attribute, clamped to the cut time T of the epoch that
// first includes it (see Epochs; a signal dated in the future, or not at
// all, counts as dated T: its publisher cannot keep it past one age limit
// after that epoch, and every replica computes the same age from the same
// record). Count and bytes keep the newest signals of a rule, in
// replay order (Order): the oldest leave first. Retention is a mesh-wide
// setting: its rules are part of the epoch record below, so every replica
// computes the same retained set from the same signals.
//
// Why go-ds-crdt cannot do it for us. go-ds-crdt v0.6.8 keeps every delta
// block, and the only way it removes a key is a tombstone, itself a delta
// that every replica keeps: deleting history makes it grow. Our journal
// also refuses tombstones outright (package crdt, Params.Immutable: no
// member may delete another's history, which is the trust argument of
// package node), so even a tombstone-based expiry is not open to us
// without weakening that. go-ds-crdt's open compaction work (pull request
// 369: snapshot blocks that keep each element's original id, and
// receiver-side reclamation of the covered history; issue 249 asks for
// snapshots) is not released and still tombstone-based. The design is
// therefore ours, in our fork-free layer above go-ds-crdt.
//
// Epochs. The journal is a sequence of epochs, each its own go-ds-crdt
// store (namespace /mesh/<mesh>/journal/<epoch>, topic
// /signalmesh/<mesh>/journal/<epoch>; epoch 0 is today's journal). An
// epoch starts from a base: the signals of the previous epoch retained at
// the epoch's cut, plus what was written above the cut. Its record is
//
//	epoch e+1: cut C (per origin, the highest sequence of e it covers),
//	           time T, retention rules R, digest D of the base's keys
//
// and the base is a pure function of (the signals of epoch e up to C, T,
// R): the retained ones, each its original signed wire form (every signal
// carries its origin's signature and Merkle proof and verifies on its own,
// so a base cannot forge a signal). Any replica that holds epoch e up to C
// recomputes the base and its digest and refuses a record whose D differs:
// a proposer cannot drop another peer's signals by leaving them out of the
// base. Concurrent proposals for e+1 are ordered by (T, proposer id) and the
// least wins everywhere; a replica that moved to a loser moves again (its
// base is recomputed from the same epoch e; nothing is written twice but
// the carried-over signals, and go-ds-crdt keeps one value per key). A
// peer proposes e+1 when the share of epoch e that left retention passes
// half, at most every half of the shortest age limit, so disk holds at
// most about 1.5 times what is retained.
//
// Moving to e+1. A replica that accepts the record (1) materialises the
// base locally from its own copy of epoch e: its keys are written to a
// local, non-replicated base area, no DAG node, no delta; (2) opens epoch
// e+1's store, empty; new signals are journaled there; (3) carries over
// every signal it holds in epoch e above the cut (same key, same signed
// value, the adoption path that exists today: go-ds-crdt keeps one entry
// whoever writes it), so that what was written concurrently with the
// switch reaches e+1 from every replica that has it; (4) announces its
// epoch with its heads. Reads see the base, then epoch e+1, then epoch e
// while it is still open.
//
// Dropping epoch e. A replica deletes its own copy of epoch e (the blocks
// reachable from e's heads, walked locally, and the store's namespace, by
// prefix: local deletes, not CRDT operations; no peer deletes anything on
// another) once every live member (announced within the membership TTL)
// has announced e+1 and a grace period (the longest partition the mesh
// is meant to heal without snapshot join, default one hour) has passed
// since the switch. Its base's signals older than retention leave at the
// next epoch; so disk is bounded by the retained signals plus one epoch's
// writes, whatever was ever published.
//
// Snapshot join. A peer that is fresh, or whose epoch is older than the
// oldest epoch any live member still has, cannot walk the history it
// lacks (it is gone). It fetches the current base over a stream protocol
// (/signalmesh/<mesh>/snapshot/<epoch>, one or a few large transfers of
// wire forms in key order), verifies every signal's signature, checks the
// base digest against the record that k live members announce (k = 2 by
// default: one hostile member cannot give a joiner a short base), then
// joins the epoch's store and walks only its deltas. Catch-up costs time in
// proportion to the retained signals. Its causal state starts from the
// record's cut: every sequence below C counts as delivered (also the ones
// that left retention), and the ids that left are in a filter of the
// record (a bloom of a fixed size), so an effect whose cause has expired
// is not held waiting for it (it is delivered, its cause reported as
// truncated, not as lost).
//
// Why no acknowledged signal within retention is lost. A signal is
// acknowledged when Publish returned (it is in its origin's outbox, synced)
// or, for Quorum(k), when k peers hold it journaled. Case by case: (a) it
// is below the cut of the next epoch: it is in epoch e on every replica
// that holds e up to C, and the base, recomputed and digest-checked, keeps
// it while it is retained; (b) it is above the cut: every replica that
// holds it carries it over at (3), its origin included (an origin keeps
// an outbox entry until its journal entry is in its current epoch); (c)
// its origin or holders were cut off during the switch: they are still in
// epoch e, and e is not dropped by anyone before they announce e+1 or the
// grace ends; when they return they see e+1's record, carry over their
// signals above the cut, and join. The one loss the design admits is
// stated: a holder of the only copy cut off longer than the grace period
// returns to a mesh that dropped e; it still carries its signals over (it
// kept e itself), so even then nothing is lost but the ordering promise
// (its signals may be delivered after later ones of other origins: they
// are marked late, as a dependency given up after DepWait is today).
//
// A peer that returns after a long absence sees, in order: the current
// epoch's record in the first head announcement; its own signals above
// the old cut carried over and gossiped; a snapshot join if its epoch was
// dropped, a plain DAG walk otherwise; then, for each named subscription
// whose cursor is below the oldest retained signal, a truncation notice
// naming the range that left while it was away, before the first signal it
// does get.
//
// Truncation is reported, never silent. Replay and a subscription's
// backlog start at the oldest retained signal and say so with a typed
// result, a named subscription as a signal of a truncation type handed to
// its handler before the first retained one. Built so far (the local view,
// Retention): Stream reports, where it passed over signals past retention,
// how many (StreamStep.Truncated); a node's Replay yields a typed error
// there and the daemon's /v1/replay an NDJSON line; a subscription's
// backlog leaves them out and its handler gets a truncation notice first
// (package node, TypeTruncated). Still to build: the rule and the cut
// time in the report.
//
// Replay streams (built). Stream gives Replay's order reading one signal
// per origin at a time (the next of each origin, a heap of the ready ones,
// the index for causes and copies): a replay's memory follows the number
// of origins, not the journal, and a Cursor (per origin, the highest
// sequence passed) goes on where it stopped.
//
// Per-origin state of departed peers (built, without epochs). The
// per-origin maps of the causal core (delivered, frontier, Lamport, what
// is known and listed) kept an entry per origin ever seen. A node's prune
// round now finds the origins whose last delivered signal is past its
// age limit and of which the journal keeps nothing; once the core has
// nothing waiting on them, each one's floor (highest sequence delivered,
// its Lamport time) is written to the node's store as one record, and the
// origin is dropped from memory, the reopen state and checkpoints. A
// signal of it that turns up later (a late copy, a return, a signal
// naming it) has the floor read back first: a copy at or below it is a
// duplicate, a new one is ordered after it (package causal, Origins that
// left; package node, origins.go). An origin whose last signal's type has
// no age limit is never dropped.
//
// Start-up (built). Reopening a node does not replay its journal: at a
// clean Close the node writes its causal state (per origin: the highest
// sequence delivered and journaled, the frontier and Lamport times, the
// ranges given up, and the filters of delivered ids) as one record, and the
// next start reads it and the journal only above it. After a crash the
// record is gone (it is deleted at start); a node that prunes, or joined
// from a snapshot, starts from its last checkpoint (the same record, taken
// after the index is flushed and the store synced, and naming the signals
// delivered but not yet journaled, whose index entries the start writes);
// any other node reads the whole journal, as before.
package journal
