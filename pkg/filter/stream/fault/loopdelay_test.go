package fault_test

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/fault"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/headermutation"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/payloadlimit"
)

// fault is filter.LoopDelay (heads alone, may delay, impure), and neither HeadersOnly
// (which promises purity and no Delay) nor SizedBodiesOnly. The chain checks the HTTP/1
// event loop uses follow: a chain with fault acts on heads (OnHeads), needs no body phase
// unless payload_limit is in it (HeadsOnly), and is not pure.
func TestLoopDelayMarker(t *testing.T) {
	mk := func(f filter.StreamFactory, cfg string) filter.StreamFilterFactory {
		t.Helper()
		ff, err := f(config.RawMessage(cfg))
		if err != nil {
			t.Fatal(err)
		}
		return ff
	}
	ft := mk(fault.Factory, `{"delay":{"fixed_delay":"1s","percentage":50}}`)
	if _, ok := ft.(filter.LoopDelay); !ok {
		t.Fatal("fault is not filter.LoopDelay")
	}
	if _, ok := ft.(filter.HeadersOnly); ok {
		t.Fatal("fault claims filter.HeadersOnly (pure, never delays)")
	}
	if _, ok := ft.(filter.SizedBodiesOnly); ok {
		t.Fatal("fault claims filter.SizedBodiesOnly")
	}
	hm := mk(headermutation.Factory, `{}`)
	pl := mk(payloadlimit.Factory, `{"max_entity_size":8}`)
	for _, tc := range []struct {
		name                     string
		fs                       []filter.StreamFilterFactory
		onHeads, headsOnly, pure bool
	}{
		{"empty", nil, true, true, true},
		{"header_mutation", []filter.StreamFilterFactory{hm}, true, true, true},
		{"fault", []filter.StreamFilterFactory{ft}, true, true, false},
		{"header_mutation+fault", []filter.StreamFilterFactory{hm, ft}, true, true, false},
		{"payload_limit+fault", []filter.StreamFilterFactory{pl, ft}, true, false, false},
	} {
		c := &filter.StreamChain{Factories: tc.fs}
		if c.OnHeads() != tc.onHeads || c.HeadsOnly() != tc.headsOnly || c.Pure() != tc.pure {
			t.Errorf("%s: OnHeads %v HeadsOnly %v Pure %v; want %v %v %v", tc.name,
				c.OnHeads(), c.HeadsOnly(), c.Pure(), tc.onHeads, tc.headsOnly, tc.pure)
		}
	}
	var nilChain *filter.StreamChain
	if !nilChain.OnHeads() || !nilChain.HeadsOnly() || !nilChain.Pure() {
		t.Error("a nil chain is not empty")
	}
}
