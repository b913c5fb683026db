package causal

import "testing"

// The scenarios below are stories: read the steps top to bottom. See
// harness_test.go for the step language.
var scenarios = []scenario{
	// Per-origin FIFO.
	{name: "fifo/in order", steps: []string{
		"add A:1 => A:1",
		"add A:2 => A:2",
		"len => 0",
	}},
	{name: "fifo/reversed: the first releases the rest in order", steps: []string{
		"add A:3 => -",
		"add A:2 => -",
		"len => 2",
		"missing => gaps=A:1-1 causes=",
		"pull => A:1",
		"add A:1 => A:1 A:2 A:3",
		"len => 0",
		"missing => gaps= causes=",
		"pull => -",
	}},
	{name: "fifo/origins are independent", steps: []string{
		"add A:2 => -",
		"add B:1 => B:1",
		"add A:1 => A:1 A:2",
	}},
	{name: "fifo/bad meta", steps: []string{
		"add A:0 => ErrMeta",
		"len => 0",
	}},

	// Direct dependencies.
	{name: "deps/waits for a dependency of another origin", steps: []string{
		"add B:1 deps=A:2 => -",
		"pull => A:1",
		"missing => gaps=A:1-2 causes=",
		"add A:1 => A:1",
		"pull => A:2",
		"add A:2 => A:2 B:1",
	}},
	// Dependencies lost with the peers that had them (DepWait).
	{name: "deps/lost: a previous signal nobody has is given up after DepWait, and delivered late if it comes", p: Params{DepWait: 10}, steps: []string{
		"add A:2 => -",
		"tick 9 => -",
		"missing => gaps=A:1-1 causes=",
		"tick 10 => A:2!deplost",
		"missing => gaps= causes=",
		"add A:3 => A:3",
		"add A:1 => A:1!late",
		"add A:1 => ErrDuplicate",
	}},
	{name: "deps/lost: an origin whose hole was given up is not named as a dependency until the hole is filled", p: Params{DepWait: 10}, steps: []string{
		"add B:1 => B:1",
		"add A:2 => -",
		"tick 10 => A:2!deplost",
		"add A:3 => A:3",
		"frontier Z 16 => B:1 lam=1 trunc=0",
		"add A:1 => A:1!late",
		"frontier Z 16 => A:3 B:1 lam=3 trunc=0",
	}},
	{name: "deps/lost: a signal delivered without a named dependency, and its origin's next ones, are not named", p: Params{DepWait: 10}, steps: []string{
		"add C:1 => C:1",
		"add B:1 deps=A:2 => -",
		"tick 10 => B:1!deplost",
		"add B:2 => B:2",
		"frontier Z 16 => C:1 lam=1 trunc=0",
	}},
	{name: "deps/lost: a named dependency nobody has; it comes later in its own order", p: Params{DepWait: 10}, steps: []string{
		"add B:1 deps=A:2 => -",
		"add A:1 => A:1",
		"tick 10 => B:1!deplost",
		"add A:2 => A:2",
	}},
	{name: "deps/lost: a dependency in the journal is on its way, never given up", p: Params{DepWait: 10}, steps: []string{
		"journal A:1 => -",
		"add A:2 => -",
		"tick 100 => -",
		"catchup => A:1 A:2",
	}},
	{name: "deps/lost: a dependency that waits itself is not given up; the lowest gap of an origin goes first", p: Params{DepWait: 10}, steps: []string{
		"add A:4 => -",
		"add B:1 deps=A:4 => -",
		"tick 3 => -",
		"add A:2 => -",
		"tick 10 => -",
		"tick 13 => A:2!deplost A:4!deplost B:1",
		"add A:3 => A:3!late",
		"add A:1 => A:1!late",
		"add A:5 => A:5",
	}},
	{name: "deps/lost: a hole in an origin's journal (after a restart, nothing waits) is given up after DepWait; the rest is read on", p: Params{DepWait: 10}, steps: []string{
		"journal A:2 => -",
		"journal A:3 => -",
		"know A:3",
		"catchup => -",
		"tick 5 => -",
		"tick 14 => -",
		"tick 15 => -",
		"catchup => A:2!deplost A:3",
		"add A:1 => A:1!late",
	}},
	{name: "restart/an effect given up without its cause is not held again when the journal is replayed", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 cause=x => -",
		"tick 10 => A:1!lost",
		"restart",
		"know A:1",
		"decide A:1 cause",
		"catchup => A:1!lost",
	}},
	{name: "restart/effects known since the start and read one after the other are owed a tenth of CauseWait each, not a whole one", p: Params{CauseWait: 10, Limit: 1}, steps: []string{
		"journal A:1 cause=x => -",
		"journal A:2 cause=y => -",
		"tick 5 => -",
		"know A:2",
		"tick 20 => -",
		"catchup => -",
		"tick 20 => -",
		"tick 21 => A:1!lost",
		"catchup => -",
		"tick 22 => A:2!lost",
	}},
	{name: "restart/without the decision it waits again", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 cause=x => -",
		"tick 10 => A:1!lost",
		"restart",
		"know A:1",
		"catchup => -",
	}},
	{name: "restart/a hole given up before is skipped when the replay reaches it", p: Params{DepWait: 10}, steps: []string{
		"add A:1 => A:1",
		"add A:3 => -",
		"tick 10 => A:3!deplost",
		"restart",
		"decide A:3 gap=2",
		"catchup => A:1 A:3!deplost",
	}},
	{name: "restart/a hole given up before: the signal after it waits for the one before it, then follows at once", p: Params{DepWait: 10}, steps: []string{
		"decide B:3 gap=2",
		"add B:3 => -",
		"add B:1 => B:1 B:3!deplost",
		"add B:2 => B:2!late",
	}},
	{name: "restart/a named dependency given up before is not waited for again", p: Params{DepWait: 10}, steps: []string{
		"decide B:1 deps",
		"add B:1 deps=A:2 => B:1!deplost",
	}},
	{name: "deps/lost: a skipped signal the journal announces is pulled and delivered late", p: Params{DepWait: 10}, steps: []string{
		"add A:2 => -",
		"tick 10 => A:2!deplost",
		"journal A:1 => -",
		"know A:1",
		"pull => A:1",
		"catchup => A:1!late",
	}},
	{name: "deps/lost: a late signal releases the effects that wait for it as their cause", p: Params{DepWait: 100}, steps: []string{
		"add A:2 => -",
		"tick 100 => A:2!deplost",
		"add B:1 cause=x => -",
		"add A:1 id=x => A:1!late B:1",
	}},
	// An evicted signal that is not in the journal (gossip only: an
	// ephemeral origin's, a hostile flood's) comes back only if someone
	// sends it again: it is on its way for DepWait, then given up like a
	// missing one. It held the signals after it for good (fault-harness
	// seeds 12705, 12707: a flood's signals waited on two nodes for two
	// minutes after the heal).
	{name: "deps/lost: a signal evicted and not journaled is waited for DepWait, then given up", p: Params{Limit: 100, OriginLimit: 2, DepWait: 10}, steps: []string{
		"gossip H:2 => -",
		"gossip H:4 => -",
		"gossip H:3 => -", // takes H:4's place: H:4 is evicted
		"tick 10 => H:2!deplost H:3",
		"gossip H:5 => -",
		"tick 25 => H:5!deplost",
	}},
	{name: "deps/lost: a share full of an origin's signals still lets in what they wait for", p: Params{Limit: 100, OriginLimit: 3, DepWait: 10}, steps: []string{
		"journal A:1 deps=B:1 => -",
		"journal A:4 => -",
		"add A:2 => -",
		"add A:3 => -",
		"add A:4 => -",
		"add A:1 deps=B:1 => -", // A:4 makes room
		"tick 10 => A:1!deplost A:2 A:3",
		"catchup => A:4",
	}},
	{name: "restart/a signal that waits inside a hole given up before is delivered in its place", p: Params{DepWait: 10}, steps: []string{
		"decide A:10 gap=5",
		"journal A:1 => -",
		"journal A:2 => -",
		"journal A:3 => -",
		"journal A:4 => -",
		"journal A:10 => -",
		"journal A:11 => -",
		"add A:7 => -",
		"know A:11",
		"catchup => A:1 A:2 A:3 A:4 A:7!deplost A:10!deplost A:11",
		"delivered A => 11",
	}},
	{name: "restart/a decision outlives a refusal", p: Params{Limit: 1, CauseWait: 10}, steps: []string{
		"decide A:3 cause",
		"add B:2 => -",
		"add A:3 cause=x => ErrFull",
		"add A:1 => A:1",
		"add A:2 => A:2",
		"add B:1 => B:1 B:2",
		"catchup => A:3!lost",
	}},
	{name: "deps/lost: without DepWait a lost dependency holds for good", steps: []string{
		"add A:2 => -",
		"tick 1000000 => -",
		"len => 1",
	}},
	{name: "deps/a dependency already delivered does not hold", steps: []string{
		"add A:1 => A:1",
		"add B:1 deps=A:1 => B:1",
	}},
	{name: "deps/several dependencies, the last one releases", steps: []string{
		"add C:1 deps=A:1,B:1 => -",
		"add B:1 => B:1",
		"len => 1",
		"add A:1 => A:1 C:1",
	}},
	{name: "deps/a chain unblocks transitively in causal order", steps: []string{
		"add C:1 deps=B:1 => -",
		"add B:1 deps=A:1 => -",
		"add C:2 => -",
		"add A:1 => A:1 B:1 C:1 C:2",
	}},

	// Cause ids.
	{name: "cause/delivered before: no wait", steps: []string{
		"add A:1 id=x => A:1",
		"add B:1 cause=x => B:1",
	}},
	{name: "cause/delivered after: effect waits, then follows", steps: []string{
		"add B:1 cause=x => -",
		"missing => gaps= causes=x",
		"add B:2 => -",
		"add A:1 id=x => A:1 B:1 B:2",
		"missing => gaps= causes=",
	}},
	{name: "cause/any source with that id is the cause", steps: []string{
		"add B:1 cause=x => -",
		"add A:1 id=x src=elsewhere => A:1 B:1",
	}},
	{name: "cause/found only via the Index of old delivered signals", p: Params{Recent: 1}, steps: []string{
		"add A:1 id=x => A:1",
		"add A:2 id=y => A:2", // x is evicted from Recent
		"ixcalls => 0",
		"add B:1 cause=x => B:1",
		"ixcalls => 1",
	}},
	{name: "cause/a journaled but undelivered copy is not the cause", p: Params{Recent: 1}, steps: []string{
		"add A:2 id=x => -", // journaled, waiting for A:1
		"add A:9 id=z => -", // noise
		"add B:1 cause=x => -",
		"add A:1 => A:1 A:2 B:1",
	}},
	{name: "cause/never comes: released after CauseWait with CauseLost", p: Params{CauseWait: 100}, steps: []string{
		"tick 10",
		"add B:1 cause=nowhere => -",
		"add B:2 => -",
		"tick 109 => -",
		"len => 2",
		"tick 110 => B:1!lost B:2",
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/waiting time counts from the start of the wait for the cause", p: Params{CauseWait: 100}, steps: []string{
		"add B:1 cause=x => -",
		"tick 50",
		"add C:1 cause=x => -",
		"tick 100 => B:1!lost",
		"missing => gaps= causes=x",
		"tick 150 => C:1!lost",
		"missing => gaps= causes=",
	}},
	{name: "cause/the cause after CauseLost is plain", p: Params{CauseWait: 10}, steps: []string{
		"add B:1 cause=x => -",
		"tick 10 => B:1!lost",
		"add A:1 id=x => A:1",
	}},
	{name: "cause/CauseWait 0 waits forever", steps: []string{
		"add B:1 cause=x => -",
		"tick 1000000000 => -",
		"len => 1",
		"add A:1 id=x => A:1 B:1",
	}},
	{name: "cause/self-cause is ignored", steps: []string{
		"add A:1 id=x cause=x => A:1",
	}},
	{name: "cause/a cause in the journal is on its way: its effect is not given up at CauseWait", p: Params{CauseWait: 10}, steps: []string{
		"journal A:2 id=a1 => -",
		"know A:2",
		"add B:1 cause=a1 => -",
		"tick 10 => -",
		"add A:1 => A:1",
		"catchup => A:2 B:1",
	}},
	{name: "cause/a journaled cause that never comes is given up at three times CauseWait", p: Params{CauseWait: 10}, steps: []string{
		"journal A:2 id=a1 => -",
		"add B:1 cause=a1 => -",
		"tick 29 => -",
		"tick 30 => B:1!lost",
	}},
	{name: "cause/a cause cycle is broken by CauseWait", p: Params{CauseWait: 10}, steps: []string{
		// A:1 says it was caused by y, which B published after delivering A:1.
		"add A:1 id=x cause=y => -",
		"add B:1 id=y deps=A:1 => -",
		"tick 9 => -",
		"tick 10 => A:1!lost B:1",
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/a cycle broken by Tick wakes another waiter of the same cause", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 id=x cause=y => -",
		"tick 5",
		"add C:1 cause=y => -", // waits for y, not yet for 10
		"add B:1 id=y deps=A:1 => -",
		"tick 10 => A:1!lost B:1 C:1",
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/an effect unblocked during Tick that waits on the same cause is not lost, and goes a tenth of CauseWait later", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 cause=x => -",
		"add A:2 cause=x => -", // waits for A:1 first
		"tick 10 => A:1!lost",
		"missing => gaps= causes=x", // A:2 now waits for x: it waited 10 since it arrived, it is owed 1 more
		"tick 10 => -",
		"tick 11 => A:2!lost",
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/a cause that waits in the buffer is not given up: its effect follows it", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 cause=x => -",
		"tick 5",
		"add B:1 cause=nowhere => -", // B:1's cause never comes
		"add B:2 id=x => -",          // A:1's cause, behind B:1
		"tick 10 => -",               // A:1's CauseWait is over, but x waits in the buffer
		"tick 15 => B:1!lost B:2 A:1",
		"len => 0",
	}},
	{name: "cause/a cause delivered during Tick wakes an earlier waiter; no stale cause is left", p: Params{CauseWait: 10}, steps: []string{
		"add A:2 id=x cause=y => -", // waits for A:1, then for y
		"tick 5",
		"add C:1 cause=y => -",
		"add A:1 => A:1",              // A:2 now waits for y, after C:1
		"add B:1 id=y deps=A:2 => -",  // y depends on its effect: a cycle
		"tick 10 => A:2!lost B:1 C:1", // A:2 arrived at 0: CauseWait since then
		"tick 15 => -",
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/an effect unblocked during Tick, waiting for the same cause, still follows it", p: Params{CauseWait: 10}, steps: []string{
		"add A:1 cause=x => -",
		"tick 8",
		"add A:2 cause=x => -", // waits for A:1, then for x until 18
		"tick 10 => A:1!lost",
		"len => 1",
		"missing => gaps= causes=x",
		"add B:1 id=x => B:1 A:2",
		"len => 0",
	}},

	{name: "cause/a noted (weak) signal counts as a cause", steps: []string{
		"note s x 1",
		"add B:1 cause=x => B:1",
		"add C:1 src=s id=x dig=1 => C:1!dup",
	}},
	{name: "cause/a note after the effect arrived releases it, not lost", p: Params{CauseWait: 100}, steps: []string{
		"add B:1 cause=x => -",
		"note s x 1 => B:1",
		"len => 0",
		"tick 1 => -",
	}},

	{name: "cause/a cause published later by the same origin is not a dependency", p: Params{CauseWait: 0}, steps: []string{
		"add A:1 cause=x => -",          // an effect published before its cause, on one peer
		"add A:2 id=x => A:1!later A:2", // the origin's order wins, on every replica
		"len => 0",
		"missing => gaps= causes=",
	}},
	{name: "cause/a cause published later by another origin still is", p: Params{CauseWait: 0}, steps: []string{
		"add A:1 cause=x => -",
		"add B:1 id=x => B:1 A:1",
	}},

	// Duplicates by place.
	{name: "dup/delivered place", steps: []string{
		"add A:1 => A:1",
		"add A:1 => ErrDuplicate",
	}},
	{name: "dup/waiting place", steps: []string{
		"add A:2 => -",
		"add A:2 => ErrDuplicate",
		"len => 1",
	}},

	// Identity.
	{name: "identity/same source, id and digest from two origins: second is Dup", steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add B:1 src=s id=e dig=7 => B:1!dup",
	}},
	{name: "identity/different digest: Conflict", steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add B:1 src=s id=e dig=8 => B:1!conflict",
		"add C:1 src=s id=e dig=8 => C:1!dup",
	}},
	{name: "identity/same id, other source: neither", steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add B:1 src=t id=e dig=8 => B:1",
	}},
	{name: "identity/the second to be delivered is the Dup, whatever arrived first", steps: []string{
		"add B:2 src=s id=e dig=7 => -",
		"add A:1 src=s id=e dig=7 => A:1",
		"add B:1 => B:1 B:2!dup",
	}},
	{name: "identity/found only via Index after eviction from Recent", p: Params{Recent: 1}, steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add A:2 => A:2",
		"ixcalls => 0",
		"add B:1 src=s id=e dig=7 => B:1!dup",
		"ixcalls => 1",
		"add B:2 src=s id=e dig=9 => B:2!conflict",
	}},
	{name: "identity/evicted, then the id is delivered under another source", p: Params{Recent: 1}, steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add A:2 => A:2",                      // evicts e
		"add B:1 src=t id=e dig=1 => B:1",     // e is recent again, with source t only
		"add C:1 src=s id=e dig=7 => C:1!dup", // A:1 is in the Index
	}},
	{name: "identity/evicted, then a conflicting copy: the first content is still a Dup", p: Params{Recent: 1}, steps: []string{
		"add A:1 src=s id=e dig=7 => A:1",
		"add A:2 => A:2",
		"add B:1 src=s id=e dig=8 => B:1!conflict",
		"add C:1 src=s id=e dig=7 => C:1!dup",
	}},

	// The bound.
	{name: "full/refused, then Pull names the next refs and the journal completes delivery", p: Params{Limit: 2}, steps: []string{
		"journal A:1",
		"journal B:1",
		"add A:4 => -",
		"add A:3 => -",
		"add A:2 => -",
		"add B:2 deps=A:2 => ErrFull",
		"len => 2",
		"pull => A:1 B:1",
		"missing => gaps=A:1-1,A:4-4,B:1-2 causes=",
		"catchup => A:1 A:2 A:3 B:1 B:2 A:4",
		"len => 0",
		"pull => -",
		"missing => gaps= causes=",
	}},
	{name: "full/ready signals need no room", p: Params{Limit: 1}, steps: []string{
		"add A:2 => -",
		"add B:1 => B:1",
		"add B:2 => B:2",
		"add A:1 => A:1 A:2",
	}},
	{name: "full/catch up a reversed history with Limit 1", p: Params{Limit: 1}, steps: []string{
		"journal A:1",
		"journal A:2",
		"journal B:1 deps=A:2",
		"journal B:2",
		"add B:2 => -",
		"add B:1 deps=A:2 => -",
		"add A:2 => ErrFull",
		"pull => A:1",
		"catchup => A:1 A:2 B:1 B:2",
	}},
	{name: "full/an earlier signal takes a later one's place, and its missing cause times out", p: Params{Limit: 1, CauseWait: 10}, steps: []string{
		// A:2 fills the buffer waiting for A:1; A:1, which it needs, takes
		// its place (A:2 is evicted: known, pulled again) and waits for a
		// cause that never comes.
		"add A:2 => -",
		"add A:1 cause=nowhere => -",
		"pull => -",
		"tick 9 => -",
		"add A:1 cause=nowhere => ErrDuplicate",
		"tick 10 => A:1!lost",
		"add A:1 cause=nowhere => ErrDuplicate",
		"len => 0",
		"missing => gaps=A:2-2 causes=",
	}},
	{name: "full/an earlier signal takes a later one's place, and its cause arriving in time is followed", p: Params{Limit: 1, CauseWait: 10}, steps: []string{
		"add A:2 => -",
		"add A:1 cause=x => -",
		"tick 5",
		"add B:1 id=x => B:1 A:1",
		"add A:1 cause=x => ErrDuplicate",
	}},
	{name: "full/a signal the waiting ones need as their cause gets in, though not ready", p: Params{Limit: 1}, steps: []string{
		"journal A:1 lam=1",
		"add C:1 cause=x lam=5 => -",
		"add B:1 id=x deps=A:1 lam=2 => -", // C:1 (later) is evicted for it
		"len => 1",
		"pull => A:1 C:1",
		"catchup => A:1 B:1 C:1!clamped",
		"len => 0",
	}},
	{name: "full/one origin's share is full: its next signal is refused, another origin's still gets in", p: Params{Limit: 10, OriginLimit: 2}, steps: []string{
		"add A:3 => -",
		"add A:4 => -",
		"add A:5 => ErrFull",
		"add B:2 => -",
		"len => 3",
		"add A:1 => A:1",
		"add A:2 => A:2 A:3 A:4",
		"pull => A:5 B:1",
	}},
	{name: "full/the origin holding the most gives up its highest signal to one holding fewer", p: Params{Limit: 3, OriginLimit: 3}, steps: []string{
		"add A:2 => -",
		"add A:3 => -",
		"add A:4 => -",
		"add B:2 => -", // nothing waits for it, yet it gets in: A:4 goes
		"len => 3",
		"add C:2 => -",       // A holds two more than C: A:3 goes
		"add D:2 => ErrFull", // A, B and C hold one each: none holds two more than D
		"add A:1 => A:1 A:2",
		"pull => A:3 B:1 C:1 D:1",
	}},
	{name: "full/a signal refused while it waited for its predecessor counts its waits from its first refusal", p: Params{Limit: 1, CauseWait: 10}, steps: []string{
		"add A:3 => -",
		"add B:2 cause=x => ErrFull", // it waits for B:1 first; no room
		"tick 20 => -",
		"add A:1 => A:1",
		"add A:2 => A:2 A:3",
		"add B:1 => B:1",
		"add B:2 cause=x => -", // around since 0: owed a tenth of CauseWait more, not a whole one
		"tick 20 => -",
		"tick 21 => B:2!lost",
	}},
	{name: "full/a stranger nothing waits for is refused, not let in", p: Params{Limit: 1}, steps: []string{
		"add C:2 lam=5 => -",
		"add D:7 lam=1 => ErrFull",
		"len => 1",
	}},
	{name: "full/know makes Pull name a signal", steps: []string{
		"journal A:1",
		"journal A:2",
		"know A:2",
		"pull => A:1",
		"missing => gaps=A:1-2 causes=",
		"catchup => A:1 A:2",
		"pull => -",
	}},

	// Frontier.
	{name: "frontier/names delivered heads, self excluded", steps: []string{
		"add A:1 lam=1 => A:1",
		"add B:1 lam=1 => B:1",
		"add C:1 deps=B:1 lam=2 => C:1",
		"frontier A 16 => C:1 lam=2 trunc=0",
		"frontier Z 16 => A:1 C:1 lam=2 trunc=0",
	}},
	{name: "frontier/a later signal naming a head covers it", steps: []string{
		"add A:1 lam=1 => A:1",
		"add B:1 lam=1 => B:1",
		"add C:1 deps=A:1,B:1 lam=2 => C:1",
		"frontier Z 16 => C:1 lam=2 trunc=0",
		"add A:2 lam=2 => A:2",
		"frontier Z 16 => A:2 C:1 lam=2 trunc=0",
	}},
	{name: "frontier/naming an older signal does not cover a newer head", steps: []string{
		"add A:1 => A:1",
		"add A:2 => A:2",
		"add C:1 deps=A:1 lam=3 => C:1",
		"frontier Z 16 => A:2 C:1 lam=3 trunc=0",
	}},
	{name: "frontier/own origin's head goes by FIFO", steps: []string{
		"add A:1 => A:1",
		"add B:1 deps=A:1 => B:1",
		"frontier B 16 => - lam=1 trunc=0",
	}},
	{name: "frontier/truncation keeps the latest by Lamport", steps: []string{
		"add A:1 => A:1", // Lamport times by default: the sequence
		"add B:1 => B:1",
		"add B:2 => B:2",
		"add B:3 => B:3",
		"add C:1 => C:1",
		"add D:1 => D:1",
		"add D:2 => D:2",
		"frontier Z 2 => B:3 D:2 lam=3 trunc=2",
		"frontier B 2 => A:1 D:2 lam=3 trunc=1",
		"frontier Z 0 => - lam=3 trunc=4",
	}},
	{name: "frontier/equal Lamport times truncate by origin", steps: []string{
		"add B:1 => B:1",
		"add A:1 => A:1",
		"add C:1 => C:1",
		"frontier Z 2 => A:1 B:1 lam=1 trunc=1",
	}},
	{name: "frontier/a Lamport time above what the dependencies allow is bounded", steps: []string{
		"add A:1 lam=9000000000000000000 => A:1!clamped",
		"frontier Z 1 => A:1 lam=1 trunc=0",
		"add B:1 deps=A:1 lam=2 => B:1",
		"add B:2 lam=4 => B:2!clamped",
		"frontier Z 2 => B:2 lam=3 trunc=0",
	}},

	// Missing.
	{name: "missing/gaps around waiting signals and causes", steps: []string{
		"add A:1 => A:1",
		"add A:3 => -",
		"add A:6 cause=q => -",
		"add B:2 deps=C:4 cause=p => -",
		"missing => gaps=A:2-2,A:4-5,B:1-1,C:1-4 causes=",
		"add A:2 => A:2 A:3",
		"add A:4 => A:4",
		"add A:5 => A:5",
		"missing => gaps=B:1-1,C:1-4 causes=q",
	}},

	// Restart: a new core over the same journal knows nothing it was not fed.
	{name: "restart/re-fed journal, dispatch off", p: Params{Recent: 1}, steps: []string{
		"add A:1 src=s id=e dig=1 => A:1",
		"add A:2 => A:2",
		"restart",
		"delivered A => 0",
		"add A:1 src=s id=e dig=1 => A:1",
		"add A:2 => A:2",
		"add B:1 src=s id=e dig=1 => B:1!dup",
	}},
}

func TestScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}

// Known gap, kept as a failing story: Note cannot return releases, and Tick
// does nothing when CauseWait is 0, so an effect that arrived before its
// weak cause was noted waits forever.
func TestNoteAfterEffectWithoutCauseWait(t *testing.T) {
	runScenario(t, scenario{steps: []string{
		"add B:1 cause=x => -",
		"note s x 1 => B:1",
		"tick 1 => -",
	}})
}

func TestNewRejectsBadParams(t *testing.T) {
	for _, p := range []Params{{}, {Limit: -1}, {Limit: 1, CauseWait: -1}, {Limit: 1, Recent: -1}, {Limit: 1, BloomBits: -1}} {
		if _, err := New[int](p, nil); err == nil {
			t.Errorf("New(%+v): no error", p)
		}
	}
	if _, err := New[int](Params{Limit: 1, Recent: 4, BloomBits: 64}, nil); err != nil {
		t.Errorf("New: %v", err)
	}
}
