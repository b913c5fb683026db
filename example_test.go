package signalmesh_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/signalmesh/signalmesh"
)

func ExampleNew() {
	cart, _ := signalmesh.New("cart.checked_out", "/shop/eu-1", nil, signalmesh.WithID("cart-7"))
	s, err := signalmesh.New("order.created", "/shop/eu-1",
		map[string]any{"order": "o-42", "total": 99.5},
		signalmesh.WithID("o-42-created"),
		signalmesh.WithTime(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)),
		signalmesh.WithCause(cart),
		signalmesh.WithExtension("region", "eu"))
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(s)
	fmt.Println(string(b))
	// Output:
	// {"specversion":"1.0","id":"o-42-created","source":"/shop/eu-1","type":"order.created","time":"2026-11-22T09:00:00Z","datacontenttype":"application/json","data":{"order":"o-42","total":99.5},"causeid":"cart-7","causesource":"/shop/eu-1","region":"eu"}
}

func ExampleFieldError() {
	_, err := signalmesh.New("order..created", "/shop", nil)
	var fe *signalmesh.FieldError
	if errors.As(err, &fe) && errors.Is(err, signalmesh.ErrBadType) {
		fmt.Println("bad field:", fe.Field)
	}
	fmt.Println(err)
	// Output:
	// bad field: type
	// signalmesh: invalid type: field type: "order..created": empty segment (leading, trailing or doubled dot)
}

func ExampleDecodeBinary() {
	s, _ := signalmesh.New("sensor.reading", "/edge/7", []byte{0x01, 0x02}, signalmesh.WithID("r-1"),
		signalmesh.WithTime(time.Unix(0, 0).UTC()))
	wire, _ := s.MarshalBinary()
	got, err := signalmesh.DecodeBinary(wire, signalmesh.Limits{})
	fmt.Println(len(wire), err, got.Equal(s))

	_, err = signalmesh.DecodeBinary(wire, signalmesh.Limits{MaxData: 1})
	fmt.Println(err)
	// Output:
	// 61 <nil> true
	// signalmesh: too large: field data: 2 bytes, limit 1
}
