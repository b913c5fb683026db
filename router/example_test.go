package router_test

import (
	"fmt"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/router"
)

func Example() {
	r := router.New[string]()
	_ = r.Add("order.**", "audit")
	_ = r.Add("order.*.created", "metrics", router.WithPriority(10))
	_ = r.Add("order.eu.created", "eu-fulfilment")
	_ = r.Add("order.*.created", "big-orders", router.WithMatch(func(s *signalmesh.Signal) bool {
		return s.Subject == "big"
	}))

	fmt.Println(r.Match("order.eu.created"))
	fmt.Println(r.Match("order.us.cancelled"))

	s, _ := signalmesh.New("order.us.created", "/shop", nil, signalmesh.WithSubject("big"))
	fmt.Println(r.Route(s))
	// Output:
	// [eu-fulfilment metrics audit]
	// [audit]
	// [metrics big-orders audit]
}

func ExampleValidate() {
	fmt.Println(router.Validate("user.**.created"))
	fmt.Println(router.Validate("user*.created"))
	fmt.Println(router.Validate("a.**.**"))
	// Output:
	// <nil>
	// router: '*' inside a literal segment (a wildcard is a whole segment: * or **): "user*.created", segment 0
	// router: '**' directly next to another '**': "a.**.**", segment 2
}

func ExampleSpecificity() {
	for _, p := range []string{"user.123.created", "user.*.created", "user.**", "**"} {
		fmt.Println(p, router.Specificity(p))
	}
	// Output:
	// user.123.created 24000
	// user.*.created 17100
	// user.** 8200
	// ** 0
}
