package payloadlimit

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/filtertest"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
)

func TestContentLength(t *testing.T) {
	f, err := Factory(config.RawMessage(`{"max_entity_size":10}`))
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{}
	in := f.NewStreamFilter(h)
	if in.OnRequestHeaders(&filtertest.Headers{KV: [][2]string{{"Content-Length", "10"}}}, false) != filter.Continue {
		t.Fatal("stopped a body at the limit")
	}
	in.OnDestroy()
	in = f.NewStreamFilter(h)
	if in.OnRequestHeaders(&filtertest.Headers{KV: [][2]string{{"content-length", "11"}}}, false) != filter.Stop || h.Status != 413 {
		t.Fatalf("over the limit: %d", h.Status)
	}
	if h.Flags != accesslog.FlagEntityTooLarge {
		t.Fatalf("flags %v", h.Flags)
	}
	in.OnDestroy()
}

func TestStreamedBody(t *testing.T) {
	f, err := Factory(config.RawMessage(`{"max_entity_size":10,"http_status":400}`))
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{}
	in := f.NewStreamFilter(h)
	defer in.OnDestroy()
	if in.OnRequestHeaders(&filtertest.Headers{}, false) != filter.Continue {
		t.Fatal("stopped at headers without a length")
	}
	if in.OnRequestData(make([]byte, 6), false) != filter.Continue {
		t.Fatal("stopped under the limit")
	}
	if in.OnRequestData(make([]byte, 5), true) != filter.Stop || h.Status != 400 {
		t.Fatalf("over the limit: %d", h.Status)
	}
}

func TestPerRouteAndBadConfig(t *testing.T) {
	rt, err := filtertest.Route(map[string]string{"payload_limit": `{"max_entity_size":1}`})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Factory(config.RawMessage(`{"max_entity_size":0}`))
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{Rt: rt}
	in := f.NewStreamFilter(h)
	defer in.OnDestroy()
	if in.OnRequestHeaders(&filtertest.Headers{KV: [][2]string{{"Content-Length", "2"}}}, false) != filter.Stop {
		t.Fatal("route override ignored")
	}
	if _, err := Factory(config.RawMessage(`{"max_entity_size":-1}`)); err == nil {
		t.Fatal("negative size accepted")
	}
	if _, err := Factory(config.RawMessage(`{"max_entity_size":1,"http_status":99}`)); err == nil {
		t.Fatal("bad status accepted")
	}
}
