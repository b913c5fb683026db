// Package causal is the delivery core of a signalmesh peer: which signals a
// peer delivers, in what order, and which it holds back. It has no
// goroutines, reads no clock and does no I/O except through the Index the
// caller gives it; the node drives it the way etcd's raft is driven: feed
// it signals (Add), time (Tick), and read what to deliver (the returned
// Releases) and what to fetch (Pull).
//
// # Causal metadata, bounded by design
//
// A signal carries its origin (the "meshpeer" extension) and a Stamp (the
// "meshcausal" extension): its sequence number among its origin's
// signals, a Lamport time, and its direct dependencies as (peer ref,
// sequence) pairs. A signal depends on
//
//   - its origin's previous signal (sequence - 1), implicitly;
//   - each direct dependency: when the origin published it, the signals it
//     had delivered that no later delivered signal named (Core.Frontier),
//     so that whatever a handler saw before publishing is delivered before
//     what it published, everywhere; except a signal delivered without
//     something given up after Params.DepWait (see "Dependencies that never
//     come" and Core.Frontier), which is not named for a while (2×DepWait,
//     or while its origin's hole stays given up), so that a flood of
//     signals that never become ready cannot tie others to it;
//   - its causeid: an effect whose cause was learned out of band (a
//     client, HTTP, another service) waits for it on every replica,
//     the publisher included. With a causesource (signalmesh.WithCause
//     sets both) only that (source, id) is the cause; a bare causeid is
//     satisfied by a signal of any source with that id.
//
// Why direct dependencies and not a vector clock: a clock gains an entry
// per origin and never loses one, so its size grows with every peer a mesh
// ever had (the first version could no longer publish past about 28
// origins). A frontier holds only the origins that published concurrently
// since this peer's last signal; it is capped at MaxDeps (48) entries by
// the parser and at a node's Params.MaxDeps (default 16) when stamping,
// keeping the latest by Lamport time; a ref is 11 characters. So a stamp is
// at most 1,625 bytes on the wire whatever the number of origins (about 230
// with 16 dependencies), and typically a few dozen bytes. What the cap costs: when more origins than
// the cap published since this peer's last signal, the ones left out are
// still delivered (they stay in the frontier and are named by the next
// signal), but a replica may deliver this signal before them; the node
// counts such stamps ("deps_truncated"). The explicit cause is never
// dropped.
//
// # Identity
//
// A signal's identity is (source, id), as CloudEvents says, and its place
// is (origin, sequence). Two copies of one identity (a retry on another
// peer, during a partition) are two places: both are journaled and both
// are resolvable, but the second to be delivered with the same content is
// a Release with Dup set (not handed to subscribers). With different
// content both are delivered and the second has Conflict set.
//
// # The bound never costs progress
//
// A signal that is not ready waits, up to Params.Limit. Past it, Add
// refuses with ErrFull but remembers that the signal exists; Pull then
// names, per origin, the next signal to read from the journal. Read in
// sequence per origin, ready signals are delivered without taking space,
// so catching up any amount of history takes time linear in it and memory
// bounded by the limit.
//
// # An effect published before its cause
//
// When one peer publishes an effect and then its cause (the cause's id was
// known out of band first, and the client retried the cause on the
// effect's peer), the two contradict each other: the cause follows the
// effect in its origin's order. The first try of the cause may well exist
// elsewhere, so with a finite Params.CauseWait the effect waits for another
// copy of its cause as for any cause: it is released after it, or after
// CauseWait without it (Release.CauseLost), before the later copy. With
// no limit (CauseWait 0) it could never be released, so there the origin's
// order wins at once (Release.CauseLater). Either way every replica
// decides the same. This holds for a later signal with the cause's id and
// the cause's source (the effect's own source when the effect names no
// causesource).
//
// # Lamport times are bounded
//
// An honest stamp's Lamport time is one more than the highest of its
// predecessor and the heads its publisher's frontier may name (the
// frontier keeps the latest; a signal delivered after something given up
// is not named, and its time does not count either, see Core.Frontier). The core counts a larger
// time as that bound (Release.LamportClamped), so one hostile stamp cannot
// push every later stamp to the end of the range.
//
// # Causes that never come
//
// A signal waiting for its causeid is released after Params.CauseWait
// (Release.CauseLost; the node counts "cause_not_found"), so a cause that
// is not in the mesh at all does not hold its effect, and its origin's
// later signals, forever. The wait counts from when the core first knew of
// the signal (it arrived, was named by another, was refused for lack of
// room, or announced by the journal: at a restart, everything the journal
// holds is known from the start), or from when it began to wait for its
// cause if that is later (it waited for its predecessor first), but then
// it is owed only a tenth of CauseWait more: effects queued one behind
// another in their origin on causes that never come (their publisher died
// before anyone had them) go a tenth of CauseWait apart, not a whole
// CauseWait each, also when a restart reads them one after the other. A cause that is in the buffer
// itself, waiting for something else (often such an effect), is not given
// up: its effect follows it, up to three times CauseWait after arriving (a
// cycle, the cause waiting on its own effect, is released at CauseWait).
// Within CauseWait a replica
// delivers effects after their causes; a partition longer than CauseWait
// may deliver an effect whose cause is on the other side first.
//
// # Dependencies that never come
//
// A dependency (an origin's previous signal or a named one) that no peer
// offered and the Index does not hold is given up after Params.DepWait
// (Release.DepLost). What is delivered so, what names it, and its origin's
// signals after it are then not named by Frontier for 2×DepWait after the
// last such delivery (sooner when only holes in the origin's order were
// given up and all were filled), and an origin is not named at all while a
// hole in its order stays given up (the last 4,096 give-ups are kept): a
// flood whose sequence skips numbers would otherwise be named again as
// soon as it paused, while a replica with a small buffer still works
// through its holes. Every replica gives them up only after
// DepWait, so naming one would make what is published wait that long
// everywhere, and a peer flooding never-ready signals would tie honest
// traffic to its flood. The cost: a signal published in that time may be
// delivered elsewhere before such a signal its publisher had delivered.
//
// # Origins that left
//
// The core holds a few entries per origin it ever saw (what it delivered,
// knows of, its frontier entry and Lamport time); with ephemeral peers
// coming and going they would grow without bound. Forget drops them for
// origins the caller says have left (a node: the origin's last delivered
// signal is past retention and the journal retains nothing of it) and that
// nothing here still needs: none of its signals waits or was refused, no
// waiting signal names it, nothing of it is given up and deliverable late,
// Frontier does not leave it out for a loss, and no signal of it above
// what was delivered is known. Forgettable returns their floors (the
// highest sequence delivered and its Lamport time); the caller stores
// them outside memory and then calls Forget, which also drops them from
// State.
//
// Why this keeps causal delivery: whenever the core meets an origin it
// holds nothing of (a signal of it, a dependency or a cause on it, Know,
// Decide), it asks Params.Recall for a floor first and, if there is one,
// goes on from it exactly as if it had never forgotten: a signal at or
// below the floor is a duplicate, the next one is released, a later one
// waits for it (a returning origin's seq n+2 arriving before n+1 waits for
// n+1), a signal naming one at or below the floor is ready, and Lamport
// times are bounded by the floor's. Nothing else the core held of the
// origin decides anything: Forget refuses while anything waits on it or is
// given up, and its one other loss, the frontier entry, names a signal
// past retention, which a replica that lacks it may never get anyway (what
// is published from then on does not name it). An origin never forgotten
// costs one Recall, when it is first seen (a "none" is remembered for the
// last 4,096 origins so answered, so a flood of signals naming invented
// origins costs one Recall per invented origin, not per signal). A
// recorded decision (Decide) about a signal at or below what was
// delivered, or below a forgotten origin's floor, is dropped without
// recalling the origin: it decides nothing and would pin it for good.
//
// The limit of this: causal order is promised for retained signals. A
// signal already past retention when it arrives (a publisher back from a
// long partition, a skewed clock) is delivered, and its origin forgotten
// at the caller's next round; what is published after that does not name
// it, and a replica that gets it later may deliver such a signal first.
package causal
