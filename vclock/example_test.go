package vclock_test

import (
	"fmt"

	"github.com/signalmesh/signalmesh/vclock"
)

func ExampleClock_Compare() {
	var a, b vclock.Clock
	a = a.Increment("alice")        // alice publishes
	b = b.Merge(a).Increment("bob") // bob sees it, then publishes
	c := a.Increment("alice")       // alice publishes again, without seeing bob
	fmt.Println(a.Compare(b), b.Compare(a), b.Compare(c))
	fmt.Println(b.Merge(c))
	// Output:
	// Before After Concurrent
	// {alice:2 bob:1}
}

func ExampleBuffer() {
	buf, _ := vclock.NewBuffer[string](100, vclock.Clock{})
	var c vclock.Clock
	cause := c.Increment("alice")
	effect := cause.Increment("bob")

	// The effect arrives first: it waits for its cause.
	out, _ := buf.Add("bob", effect, "payment.captured")
	fmt.Println(out, buf.Missing())
	out, _ = buf.Add("alice", cause, "order.created")
	fmt.Println(out)
	// Output:
	// [] [{alice 1 1}]
	// [order.created payment.captured]
}
