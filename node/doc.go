// Package node is a signalmesh peer: a libp2p host that publishes and
// subscribes to signals with no broker and no leader.
//
// # The two paths of a signal
//
// Publish validates the signals and hands them to the committer, which
// stamps each (publishing peer, and a causal stamp: the peer's sequence
// number, assigned in commit order, a Lamport time and the signal's direct
// dependencies, see package causal), signs each with the node's key (see
// Trust) and writes them to a local outbox in one batch and one fsync. Then Publish returns: the signals survive a
// restart.
//
//  1. Fast path: the committer's batch is gossiped over GossipSub in frames
//     (each signal signed by its origin, see Trust; GossipSub itself signs
//     nothing, so each hop verifies a batch once, not twice), with flood
//     publish and a mesh degree of 4 where GossipSub's default is 6 (the
//     journal, not gossip redundancy, makes delivery complete;
//     Params.GossipDegree). Each peer's validator decodes and bounds every message and
//     checks that a frame's signals have one origin, which signed them;
//     rejects are counted by reason and never forwarded. GossipSub's
//     repair (IHAVE, then IWANT) on this topic is not asked of a peer
//     connected for less than its 3 s gossip window while the node has a
//     mesh: what it names is mostly what was published before the two
//     were connected (after a heal, each side's last frames), and the
//     journal brings it (Status.GossipLeft). A node that restarted on its
//     journal keeps the gossip of the peers it meets as it comes back
//     (within 3 s of its first connection): it names what was published
//     while the node was down.
//  2. Durable path: a journaler moves outbox batches (up to 5,000 signals or
//     50 ms) into the journal, a go-ds-crdt store. Each batch is one DAG
//     node; heads are announced every 2 s, and sent on a stream to each peer
//     that joins the topic (a partition healing, a peer starting), which
//     costs one stream per pair where a broadcast would make every peer
//     verify every answer to every join; heads learned so are passed on
//     to the topic once their block is local. A new head's first
//     announcement carries its block's recipe (package crdt): a peer that
//     got the batch's signals by gossip builds the block from them and
//     checks it against the head's CID instead of fetching it
//     (Status.BlocksRebuilt); a peer that missed the gossip fetches the
//     DAG over bitswap (Status.BlocksFetched). Either way the signals reach
//     the node through the store's put hook.
//
// Both paths feed one door, the pure causal core (package causal) that the
// node's loop drives: dedup by (origin, sequence) and by identity, causal
// readiness, a bounded buffer, then the subscriptions. Each subscription
// sees each signal once and never an effect before its cause: a signal
// waits for its origin's previous signal, for what its publisher had
// delivered when it published (its direct dependencies), and for its
// causeid, also when the cause was learned out of band (a client, HTTP,
// another service) and not yet delivered anywhere, on every replica, the
// publisher included. A cause that does not come is reported
// (Status.Missing and Status.MissingCauses, a warning after
// Params.CauseTimeout); after Params.CauseWait (default 2 minutes) the
// effect is delivered without it and counted ("cause_not_found"), so a
// typo in a causeid does not hold its publisher's signals forever; a cause
// that is journaled but not delivered yet (behind a full buffer, say) is on
// its way and is waited for longer, up to three times CauseWait. Likewise a
// dependency that no peer offers and the journal does not hold (lost with
// the peers that had it: a publisher killed right after another peer
// delivered its signal) is given up after Params.DepWait (default 1
// minute, below CauseWait, "dependency_not_found"); a previous signal given up that turns
// up later is still delivered, out of its origin's order
// ("delivered_late"), also to named subscriptions whose cursor is past it
// (at most once there: a late signal not handled before the subscription
// or the node stops is not handed over again), at once, without waiting
// for its own dependencies; the last 4,096 ranges given up are remembered
// for this, older ones' signals are duplicates.
// Give-ups are recorded in the store, so a restart's replay of the journal
// does not wait for them again. Within CauseWait and DepWait every replica
// delivers in causal order; a partition longer than them may deliver an
// effect before a cause or dependency on the far side. A signal delivered
// without something given up, and its origin's later ones, are not named
// as dependencies for twice DepWait, nor while a hole in that origin's
// order stays given up (package causal, Core.Frontier): what
// is published then may be delivered elsewhere before them (a causeid on
// them still holds). When the buffer
// (Params.CausalBuffer) is full, what does not fit is read again from the
// journal per origin in sequence: catching up any amount of history takes
// time linear in it and memory bounded by the buffer. One origin holds at
// most Params.OriginBuffer (a quarter) of the buffer, and when it is full
// the origin holding the most gives way to one holding fewer: a peer
// flooding signals that never become ready cannot keep the others out.
//
// # Identity
//
// A signal's identity is (source, id), as CloudEvents defines it. The same
// (source, id) with the same content is an idempotent retry, on any peer,
// at any time: published again on the same peer it is not stamped twice;
// published on two cut-off peers, both copies are journaled (each at its
// own (origin, sequence), so no place is ever hidden), and every
// subscription sees it once. The same (source, id) with other content is
// refused with ErrConflict where the node can tell (it published or
// journaled the first); where it cannot (two cut-off peers), both are kept
// and delivered, and counted (Status.Conflicts, a warning).
//
// # Consistency
//
// Eventual (the default) is the above. Weak signals are gossiped only: not
// journaled, not ordered, best effort. Quorum(k) is Eventual, and Publish
// also waits until k other peers acknowledge the signals are durably in their
// journal, or fails with a *QuorumError when its context ends (the signals
// still converge). A peer acknowledges a signal's journal place (origin,
// sequence) only once the entry is committed in its store and the store is
// synced; acks count once per peer, never from this node, and only from the
// Allow list when one is set. Publishing the same signals again after a
// *QuorumError publishes nothing twice and waits for acks again: it succeeds
// once k peers hold them, on this node or another. Quorum is a durability
// promise, not linearizability. Only peers with their journal on disk
// (Config.DataDir, or a Config.Datastore) count: an in-memory peer
// acknowledges too, but says its journal is in memory, and only
// QuorumInMemory(k) counts that (its copy lasts as long as its process).
// That an ack is from disk is the acking peer's word, as its holding the
// signal at all is; a peer of a version before this distinction acks
// every place as from disk, and a Config.Datastore counts as disk.
// Close's hand-off of a node's last journal deltas takes any peer that
// holds them, in memory or on disk.
//
// # Subscriptions
//
// Subscribe takes a router pattern and a Handler. Handlers of one
// subscription run one at a time, in causal order, on the subscription's own
// goroutine, behind a bounded queue (WithMaxInFlight). Order holds within
// a subscription, not across two: each runs at its own pace, so a handler of
// "order.**" may run before another subscription's handler of "user.**" has
// finished with the order's cause. A handler that needs both in order takes
// both from one subscription ("**", or a pattern covering both). Past its
// queue a named subscription keeps the rest in a log on the node's store
// and reads it back in order (it falls behind, it loses nothing); an unnamed one does
// what its overflow policy says (WithOverflow): OverflowDrop, the default,
// drops (counted, "subscriber_overflow"); OverflowBlock makes the node's
// loop wait for room, which holds up the whole node (every subscription,
// gossip, the journal's sync, Publish) while it waits: back-pressure, at
// the pace of the slowest such handler, which must pass its ctx to the
// node when it calls it (see WithOverflow). A named
// subscription (WithName) keeps a cursor in the store and resumes after a
// restart, each signal handled once. A failing handler is retried with
// backoff, then a DeadLetterType signal is published. Middleware wraps
// handlers (WithMiddleware, Config.DispatchMiddleware) and publishing
// (Config.PublishMiddleware). WithLocal keeps a short-lived subscription
// (a tail) to this node; the others are in the mesh-wide subscription set.
//
// # The subscription set
//
// The mesh-wide subscription set is a registry in a second go-ds-crdt
// store: each node's record (its Config.Region) and each subscription
// (pattern, group, strategy, region, and a group member's progress), each
// with a lease (Params.Lease, default 10 s). A node renews its entries
// every Lease/3 by gossip on a "leases" topic (the entries themselves,
// sealed by the sender, each refused unless it is its signer's), and writes
// them to the CRDT, in one delta, when made, when left, and every 10
// leases: the CRDT is what a node that missed the gossip or joins later
// reads. Each node reads the set every Lease/8 and when an entry comes or
// goes; a new node's group members start once every peer it is connected
// to on that topic has a live entry (at most half a lease). An entry not
// renewed within its lease (four leases while its owner is connected: a
// busy peer's renewals can lag, a dead process drops its connections) is
// dead, and any node deletes it after two. A malformed entry is refused
// and counted (Status.Rejected "registry_entry"), deleted, and never
// read; past Params.MaxRegistry entries the rest are ignored
// ("registry_full"). Subscriptions, Routes and CanRoute answer from it for
// the whole mesh; Members lists the peers with a live entry, and
// WatchMembers reports them coming up, going down, and suspected (a live
// lease and no connection: a partition, or a death not yet a lease old).
// Health checks the store, the loop and the causal buffer.
//
// # Consumer groups
//
// Subscribe(pattern, h, WithGroup("fulfilment"), WithStrategy(Hash)) makes
// a member of a group; members on any peers share its signals, with no
// leader: every node delivers every signal, and each member decides for
// itself, from the live members in the set, whether a signal is its own.
// Strategies: Hash (the default: by subject, or HashBy; one subject's
// signals to one member, in causal order), Balanced (spread by identity),
// LocalFirst (a member on the publishing peer, else in its region, else
// any), Broadcast (every member). Assignment is rendezvous hashing over the
// live members eligible for the signal (a member takes only signals its
// node delivered after it joined): a member that joins takes keys only for
// itself, one that departs gives up only its own.
//
// A member is a named subscription (its name defaults to
// "group.<group>"): it keeps a cursor (what it handled or passed over as
// another's) and announces it as its progress mark with each renewal.
// When a member departs, each other member hands over, from the journal,
// the signals it had passed over as the departed member's, that the
// departed member's mark does not cover and that are now its own; and,
// for 10 leases, of the signals it judges from then on, it passes over
// those that were the departed member's and that its mark covers (a
// member that lags behind the departed one reaches them after the
// departure: the departed member handled them):
//
//   - A member that leaves cleanly (Subscription.Close) stops, then
//     publishes its final mark: nothing is lost, nothing handled twice.
//     Node.Close does the same for its members first, then waits until
//     every connected peer with members in the group has acknowledged the
//     leave (a peer renews at once when it receives one, and its renewals
//     name the leaves it received), all within Params.HandOff; a peer
//     that does not acknowledge in time (cut off, or of an older version)
//     takes the lease's way, below (counted dropped
//     "leave_unacknowledged").
//   - A member that dies (kill -9, a cut) is dropped once its lease runs
//     out, and its share moves: nothing is lost; what it handled after its
//     last renewal that reached the others (at most Lease/3 of its work,
//     plus the renewal's travel) is handled again.
//   - During a partition each side drops the other's members after the
//     lease and handles everything it gets, availability first; after the
//     heal, signals published on the far side during the cut that arrive
//     before the far members' renewals are handled again here: the
//     duplicates grow with what the far side published during the cut,
//     not with the lease.
//
// The lease is the node's: a member whose handler is slow or stuck keeps
// its share (with Hash, its subjects' signals wait for it, in order); the
// lease detects dead nodes and cut links, not slow handlers.
//
// A member that joins takes its share of what its node delivers from
// then on; a signal delivered between its joining and another member's
// hearing of it (its entry is gossiped at once) can be handled by both,
// not counted.
//
// A member that comes back (the same name on the same peer: a
// subscription made again, a process restarted) resumes after its final
// mark, or its last one; the signals its node delivers after that mark
// include those the others handled for it while it was away. Each member
// announces, with its mark, the exact places of the signals it handled
// for departed members (the last 16 members, 32 KiB of bitmaps), and for
// 10 leases after it comes back a member passes those over
// (Status.PassedBack), each only up to the announcer's own mark. It skips
// nothing another member did not say it handled (a signal whose handler
// gave up, dead-lettered, counts as handled), so this costs no signal;
// what it does not learn in time is handled twice, counted in Taken
// where it was taken:
//
//   - what the others took in their last renewal interval before its
//     return (they renew at once when a member joins or comes back; the
//     member may judge a signal before that renewal reaches it);
//   - what a member took before its own restart (held in memory);
//   - what was handled after the member had been gone 10 leases (it is
//     no longer another's share then, only the handler's own): a member
//     away longer handles its share of that again, not counted.

// Subscription.Taken and Status.TakenOver count the signals a member
// handled for departed members (handed over, or theirs by the assignment
// within 10 leases of their departure that their mark does not cover)
// and the second copies of events they handed over (below): the
// duplicates are at most those.
//
// Handlers get the signal, whose identity (IdempotencyKey: source and
// id) is the same for every copy: a handler that records the keys it
// handled with its effects makes duplicates harmless. All members of a
// group must use the same strategy and pattern.
//
// An event published on two peers (a retry on another peer) has two
// copies, each at its own place, which nodes may deliver in either
// order. Each copy is judged by the strategy, also the one a node
// delivers as a duplicate of the other, and a member hands over a copy
// that is its share unless it handled the event already: the event is
// handled at least once, and once by each member that owns one of its
// copies (with LocalFirst, the members on the two publishing peers); a
// copy handed over this way is counted in Taken. A member remembers the
// last 4,096 events it handled: a second copy that comes later than that
// (a long partition) is handed over again by the same member, counted.
//
// # Nothing delivered is lost
//
// A signal that any replica delivered ends in the mesh's journal, also
// when its origin leaves for good:
//
//   - A signal of another origin delivered before its journal entry
//     arrived (it came by gossip) is written to a local part of the store
//     before any handler sees it (no fsync: a kill -9 keeps it), and
//     cleared when its journal entry arrives. A replica that does not see
//     the entry within Params.Adopt journals the signal itself, under the
//     same (origin, sequence) (go-ds-crdt keeps one entry); at a clean
//     Close at once, after a kill -9 first thing at the next start. An
//     adoption that fails to write is tried again one Params.Adopt later.
//   - Close hands off: it waits, bounded by Params.HandOff (5 s), until a
//     connected peer acknowledges it holds this node's last journal
//     batches and what Close adopted, so a peer that publishes and leaves
//     at once takes no only copy with it.
//   - Announced DAG heads reach go-ds-crdt only once their block is local:
//     a head whose block only a departed peer had is fetched by bounded
//     workers with a timeout, retried twice, then given up and counted
//     (Status.Dropped "head_fetch_failed"); it holds up no other head.
//   - A DAG walk cut short by a kill -9 (go-ds-crdt merges a branch from
//     its top down and marks each block as it goes, so the top would hide
//     the rest for good) is finished after the restart: the journal finds
//     the links of merged blocks that were never merged and fetches and
//     merges them (see package crdt).
//   - Get, Causes, Effects and Trace see every signal the node delivered,
//     also before its journal entry lands.
//   - A named subscription never skips: it lags (spilling to the store),
//     its cursor moves only past handled or dead-lettered signals, each
//     hand-over to the handler is one write(2) to its cursor log (kept
//     across kill -9, checkpointed to the store every 4,096 advances),
//     which carries the last signal's advance too, and it remembers the
//     identities of the last 4,096 events it handled, so another copy of
//     one (a retry published on another peer) is not handed over again
//     after a restart. Exactly once across a clean restart; at least once
//     across a crash (a power loss can lose the last log writes), and
//     what was handed over but not recorded as handled comes again first,
//     before anything new.
//   - An unnamed subscription WithOverflow(OverflowBlock) never skips
//     either, while its node runs: the node waits for room in its queue
//     (holding up the rest of the node meanwhile, see WithOverflow). One
//     with OverflowDrop, the default, drops what its full queue cannot
//     take, counted ("subscriber_overflow"). Neither keeps anything across
//     a Close or a restart: that takes a name.
//
// # Offline
//
// A node with no peers publishes, journals and delivers locally; when it
// connects again, both sides exchange DAG heads and converge. Nothing
// published on either side of a partition is lost. A node redials its
// Bootstrap peers whenever it is not connected to them (every
// Params.Redial), so a healed network or a restarted peer is found again
// without anyone calling Connect. The fault harness (package chaos) checks
// all of this across real network cuts, kill -9 and restarts.
//
// GossipSub can stop sending to a peer that stays connected when one of
// two connections to it closes (a relayed one giving way to a direct one,
// a cut healed quickly): it gives up opening new streams after four
// within ten minutes, or forgets the peer's subscriptions; bitswap, which
// fetches the journal's blocks, can likewise stop asking the peer. The
// node notices (a stream that stays closed, a peer that stays outside the
// signals topic while connected, for two seconds; a journal head the peer
// announced that has not come for seven) and connects to that peer again,
// which starts GossipSub and bitswap afresh; Status.Relinked counts it.
//
// # Lifecycle
//
//	n, err := node.New(ctx, node.Config{Mesh: "shop", DataDir: "/var/lib/shop"})
//	if err != nil { ... }
//	defer n.Close()
//	sub, err := n.Subscribe("order.**", handle, node.WithName("fulfilment"))
//	err = n.Publish(ctx, sig)
//
// Every method is safe for concurrent use. Close stops every goroutine the
// node started (in order: its own loops, the journal, GossipSub and the DAG
// service, the host, the store) and is idempotent.
//
// A Weak signal is not a cause: an effect whose causeid names one waits
// for a journaled signal with that id (anyone may gossip a Weak signal with
// any id).
//
// # Trust
//
// Every signal is signed by its origin, once per 32 signals of a commit
// batch: the committer builds a Merkle tree (SHA-256 cut to 16 bytes) over
// the binary wire forms, without meshsig, of each 32 signals, and signs
// its root, with the mesh name and the tree's size, with its libp2p key.
// Each signal's meshsig extension holds its proof: that signature, its
// index in the tree and its Merkle path (at most 5 nodes; a meshsig is at
// most 198 bytes; version 1 proofs, whole batches with 32-byte nodes,
// still verify). So its content, its
// meshpeer and its causal stamp (sequence, Lamport time, dependencies) are
// all signed, and each signal verifies on its own, whatever became of the
// rest of its batch; a replica that adopts or re-journals it keeps its
// bytes, proof included. The key comes from the meshpeer peer id (Ed25519
// ids embed it). A replica checks a signal's path and verifies a root's
// signature once per tree (it remembers the last 4,096 roots it
// verified). Replicas verify on both paths before a signal is delivered or
// counted:
//
//   - Gossip: the validator rejects a frame whose signals name more than
//     one meshpeer, and a signal, Weak ones included, whose meshsig does
//     not verify (Status.Rejected "origin", "signature"). GossipSub
//     messages carry no author, sequence number or signature of their own
//     (StrictNoSign; one with any is refused, "gossip: unexpected ..."):
//     the signals' signatures make a second one per message redundant. The
//     control topics (quorum acks, address announcements, leases, journal
//     head announcements) seal each message with the sender's key instead
//     (a signed envelope for that topic), and their validators refuse one
//     whose seal does not verify ("ack", "announcement", "lease_message",
//     "heads_seal"). Messages are named by a hash of their content. With
//     no author on a message, any peer can pass on an origin's signals in
//     frames of its own making (a subset, a repeat): they verify and are
//     deduplicated like any copy, so this buys a peer nothing but the
//     bandwidth, as a replay did before; it is not penalised.
//   - Allow list: with Config.Allow set, a signal whose origin is not in
//     it (nor this node) is refused on both paths, also when an allowed
//     peer relays it ("origin_not_allowed", "journal_not_allowed"); so are
//     head announcements ("heads_not_member"). Give every member the same
//     list: a member without one relays outsiders' signals (counted and
//     ignored by peers with it), and its own signals that depend on an
//     outsider's wait Params.DepWait there. Entries journaled before the
//     list was set stay in the journal and are replayed at a restart.
//   - Journal: go-ds-crdt gets blocks from other replicas only through a
//     check (package crdt): a block is refused, before go-ds-crdt merges
//     it, when an entry's key is not the place (origin ref, sequence) of
//     the signal it holds ("journal_key"), the signal is not signed by that
//     origin ("journal_signature"), an entry would get another value than
//     the one this replica holds ("journal_overwrite"), or the delta
//     deletes anything ("journal_tombstone"); each refused block is
//     counted once. The put hook verifies once more (a hash lookup: the
//     node remembers the last 65,536 wire forms it verified or signed, so
//     a signal that came by gossip is not verified again).
//
// What a member of the mesh (a peer that holds the PSK, or any peer when
// there is none) can no longer do: write a journal entry or gossip a
// signal in another peer's name, Weak ones included; change, overwrite or
// delete another peer's journal entries; take another peer's next
// (origin, sequence) so that its real signal is dropped as a duplicate;
// replay a signal of another mesh. What it still can: publish anything in
// its own name, at its own places (signed, so attributable to its key);
// equivocate on its own places, giving two replicas two different signals
// for one (origin, sequence): a replica that already holds one refuses
// the other (counted "journal_overwrite"), but one that had neither keeps
// the first it gets, so replicas can disagree on that origin's entry and
// nothing detects it unless both versions meet one replica; withhold or
// delay its own signals; build its blocks on refused ones (what is above
// is merged, the refused block is not, and the receiving store is marked
// dirty until go-ds-crdt's repair walk, one local DAG read at most every
// 10 s); and flood (see below). Anyone with the key of a peer is that
// peer. A signal's journal ref is 64 bits of a hash of its origin's peer
// id: finding another key with the same ref takes about 2^64 work.
//
// Head announcements of the journal are checked before anything acts on
// them (package crdt): one whose seal does not verify, that does not
// decode, names more than 1,024 heads or a head that is no go-ds-crdt
// block id is rejected ("heads_seal", "heads_decode",
// "heads_too_many", "heads_cid"); an announcer gets 64 heads a second
// (burst 1,024), past which its announcements are ignored ("heads_rate");
// and the prefetcher keeps at most 64 heads of one announcer and fetches
// at most 2 of them at a time, so heads nobody can serve tie up 2 of its 8
// workers, not all.
//
// GossipSub peer scoring is on. A peer's score falls when it hands this
// node a message no honest peer could pass on: a frame of more than one
// origin, or a signal whose signature does not verify (-100 times the
// squared count, decaying by 0.9 a second; an undecodable message costs
// nothing, since a relay of a newer version may pass on what this one
// cannot decode), and with repeated protocol misbehaviour (unanswered
// IWANTs, GRAFTs during a backoff; the first 6 are free). Below -10
// nothing is gossiped to it, below -50 nothing published to it, below -80
// its messages are ignored unread (graylisted: one such message does it,
// for about 2 s; ten, for about 30 s). What is refused by policy (an origin
// outside the allow list, a non-member's or an over-rate head
// announcement) is ignored, not penalised; GossipSub's own count of
// rejected messages is off. Time in mesh, delivery counts and IP
// colocation do not count: a slow or quiet peer keeps 0, and edge peers
// behind one NAT share an address. Status.Links shows each
// peer's score, Status.Graylisted how many are below -80.
//
// # Known limits
//
// Signing changes the wire protocol: peers that do not sign are refused,
// so are peers whose GossipSub signs its messages (versions before the
// control topics were sealed), and a journal written by an older version
// is not re-verified (entries already in the store are trusted). Signing
// costs an Ed25519 signature (about 25 µs) per 32 signals and, per signal,
// a few µs of hashing and a larger wire form (its proof, up to 198
// bytes); each replica verifies one signature per 32 signals (about 57 µs)
// and a path per signal (BenchmarkSignVerify, BenchmarkDurablePublish).
// Measured against the same code unsigned, a partition heal moves about
// 1.9 times the bytes and takes about 1.45 times as long (BENCHMARKS.md). A
// member can fill the causal buffer with signals whose dependencies never
// come (they hold their place until they do), and announce heads nobody
// can serve (within its rate, each ties up one of its 2 fetches for 10
// s). Two blocks that give one entry two
// values, checked at the same moment, both pass (only an equivocating
// origin can make them). A fresh replica whose first announcement came
// from a hostile member takes that head at once (go-ds-crdt does so
// before walking it): a refused block below it then stops its repair walk
// until another replica's heads replace it. The subscription set is not
// signed: a member can write, or delete, entries in another peer's name
// there (the lease messages are signed, and the owner's next renewal puts
// its entries back), and so join or leave a group for another peer. A
// signal nobody received by gossip is only as durable as its origin until a replica fetched its
// delta (Close hands off; a kill -9 does not). History only grows
// (go-ds-crdt keeps every delta; see Bounded history): this includes the
// subscription set, where a node writes a delta every 10 leases (a few
// hundred bytes per entry, plus about 28 bytes per origin in a group
// member's marks). A consumer group member's hand-over reads the window
// between the departed member's mark and its own cursor from the store by
// place: a member that lags far behind reads that much; one that lags
// more than 10 leases behind a member that departed ahead of it handles
// again, not counted, the departed member's share of what it judges
// after those 10 leases. A member that comes back more than 10 leases
// after it departed handles again its share of what the others handled
// after those 10 leases (see Consumer groups). A group member announces
// what it took over for others (SubscriptionInfo.Took) and the
// subscription set is not signed per
// entry: a peer that can write the set can make a member that has just
// come back skip signals (up to the announcing entry's mark). A member that joins
// a group mid-stream can cause duplicates, not counted (see Consumer
// groups): per-member acknowledgements of a joiner (the cursor at which
// each member started to count it in) would make joins exact, later work.
//
// # Bounded history (first part)
//
// The design, and its argument, is in package journal's doc (Bounded
// history). Built so far: a clean Close writes the node's causal state
// (per origin, not per signal) and the next start restores it instead of
// reading the journal, so reopening costs the same at any journal length
// (after a crash the start still reads the whole journal); Replay and the
// daemon's /v1/replay read the journal as they stream it (memory per
// origin), from a cursor, in pages; a subscription's backlog is read the
// same way, from its cursor, as its handler takes it (a named subscription
// that resumes reads what it missed, not the history, and a backlog of any
// length holds memory per origin, not per signal); Effects and Trace read the effects of an id through an effects
// index (cost per result, not per journal signal; a store written before
// it gets its entries in one pass over the journal at its next start);
// Config.Retention (age and count per
// type pattern) bounds the local view: Replay and a new subscription's
// backlog leave out what is past it, Replay and /v1/replay say where (a
// *TruncatedError, a {"past_retention": N} line), and a subscription's
// handler gets a truncation notice first (TypeTruncated). Signals past an
// age limit leave the disk of every node that delivered them (prune.go,
// Params.Prune), a node started with Config.SnapshotJoin copies what a
// bootstrap peer retains instead of fetching the whole history
// (snapshot.go), and a node that pruned or joined so starts after a crash
// from its last checkpoint (checkpoint.go). An origin that left (its last
// delivered signal past an age limit, nothing of it retained in the
// journal, nothing waiting on it) leaves the causal core's memory, the
// reopen state and checkpoints, and the node's maps of origins; its
// floor, one small record on the store, is read back when the origin is
// met again (origins.go; Status.Origins, Status.Forgotten). Not built
// yet: the epochs of package journal's design (see there what that
// leaves).
package node
