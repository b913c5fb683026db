package watermill_test

import (
	"context"
	"errors"
	"testing"
	"time"

	wm "github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/watermill"
)

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// A consumer group resumes after its last acked message, on another peer's
// messages: the message it had in hand, not acked, when its Subscriber
// closed comes again; the acked one does not.
func TestGroupResumesAfterAck(t *testing.T) {
	a, b := twoPeers(t, nil)
	pub, _ := watermill.NewPublisher(a, watermill.PublisherConfig{})
	msgs := []*message.Message{
		message.NewMessage("m1", []byte("1")), message.NewMessage("m2", []byte("2")), message.NewMessage("m3", []byte("3")),
	}
	if err := pub.Publish("order.created", msgs...); err != nil {
		t.Fatal(err)
	}
	sub, _ := watermill.NewSubscriber(b, watermill.SubscriberConfig{ConsumerGroup: "billing"})
	ch, err := sub.Subscribe(context.Background(), "order.*")
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch); m.UUID != "m1" {
		t.Fatalf("first %s", m.UUID)
	} else {
		m.Ack()
	}
	held := receive(t, ch) // m2, never acked
	if held.UUID != "m2" {
		t.Fatalf("second %s", held.UUID)
	}
	sub2, _ := watermill.NewSubscriber(b, watermill.SubscriberConfig{ConsumerGroup: "billing"})
	if _, err := sub2.Subscribe(context.Background(), "order.*"); !errors.Is(err, watermill.ErrGroupBusy) {
		t.Fatalf("second subscription of the group: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Context().Done():
	default:
		t.Fatal("the held message's context lives on after Close")
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	ch2, err := sub2.Subscribe(context.Background(), "order.*")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"m2", "m3"} {
		m := receive(t, ch2)
		if m.UUID != want {
			t.Fatalf("after resuming: %s, want %s", m.UUID, want)
		}
		m.Ack()
	}
	if err := sub2.Close(); err != nil {
		t.Fatal(err)
	}
}

// Metadata keeps its keys through the mesh: attribute names set
// attributes, extension names become extensions, the rest travel in
// wmmetadata; causeid orders the message after its cause.
func TestMetadataMapping(t *testing.T) {
	msg := message.NewMessage(wm.NewUUID(), []byte(`{"n":1}`))
	msg.Metadata.Set("datacontenttype", "application/json")
	msg.Metadata.Set("subject", "o-1")
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set("causeid", "c-1")
	msg.Metadata.Set("Correlation_ID", "x-1") // not an extension name
	msg.Metadata.Set("ce_source", "ignored")
	s, err := watermill.ToSignal("order.created", "/svc", msg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Source != "/svc/order.created" || s.Subject != "o-1" || s.DataContentType != "application/json" ||
		s.CauseID() != "c-1" || s.Extensions["tenant"] != "acme" || s.Extensions[watermill.ExtMetadata] != `{"Correlation_ID":"x-1"}` {
		t.Fatalf("signal %+v", s)
	}
	back := watermill.FromSignal(s)
	for k, v := range map[string]string{"subject": "o-1", "tenant": "acme", "causeid": "c-1", "Correlation_ID": "x-1",
		"datacontenttype": "application/json", watermill.MetadataSource: "/svc/order.created"} {
		if back.Metadata.Get(k) != v {
			t.Errorf("metadata %s: %q, want %q", k, back.Metadata.Get(k), v)
		}
	}
	if back.UUID != msg.UUID || string(back.Payload) != `{"n":1}` {
		t.Fatalf("message %s %s", back.UUID, back.Payload)
	}
	// A signal published natively shows its typed extensions as text.
	native, _ := signalmesh.New("order.created", "/native", nil, signalmesh.WithExtension("n", 3), signalmesh.WithExtension("ok", true))
	m := watermill.FromSignal(native)
	if m.Metadata.Get("n") != "3" || m.Metadata.Get("ok") != "true" {
		t.Fatalf("native metadata %v", m.Metadata)
	}
	if _, err := watermill.ToSignal("not a type", "/svc", msg); !errors.Is(err, signalmesh.ErrBadType) {
		t.Fatalf("bad topic: %v", err)
	}
}

// Publish and Subscribe fail after Close; Close is idempotent.
func TestClosed(t *testing.T) {
	a, _ := twoPeers(t, nil)
	pub, _ := watermill.NewPublisher(a, watermill.PublisherConfig{})
	sub, _ := watermill.NewSubscriber(a, watermill.SubscriberConfig{})
	for i := 0; i < 2; i++ {
		if err := pub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish("a", message.NewMessage("1", nil)); !errors.Is(err, watermill.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if _, err := sub.Subscribe(context.Background(), "a"); !errors.Is(err, watermill.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
}
