package headermutation

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/filtertest"
)

func TestMutations(t *testing.T) {
	f, err := Factory(config.RawMessage(`{
		"request_headers_to_add":[{"header":{"key":"x-a","value":"1"}},{"header":{"key":"x-r","value":"new"},"append":false}],
		"request_headers_to_remove":["x-secret"],
		"response_headers_to_add":[{"header":{"key":"x-b","value":"2"}}],
		"response_headers_to_remove":["server"]}`))
	if err != nil {
		t.Fatal(err)
	}
	in := f.NewStreamFilter(&filtertest.Handler{})
	defer in.OnDestroy()
	req := &filtertest.Headers{KV: [][2]string{{"X-Secret", "s"}, {"X-R", "old"}, {"X-A", "0"}}}
	if in.OnRequestHeaders(req, true) != filter.Continue {
		t.Fatal("stopped")
	}
	want := [][2]string{{"X-A", "0"}, {"x-a", "1"}, {"x-r", "new"}}
	if len(req.KV) != len(want) {
		t.Fatalf("request headers %v", req.KV)
	}
	for i := range want {
		if req.KV[i] != want[i] {
			t.Fatalf("request headers %v, want %v", req.KV, want)
		}
	}
	resp := &filtertest.Headers{KV: [][2]string{{"Server", "origin"}}}
	in.OnResponseHeaders(200, resp, true)
	if len(resp.KV) != 1 || resp.KV[0] != [2]string{"x-b", "2"} {
		t.Fatalf("response headers %v", resp.KV)
	}
	if _, err := Factory(config.RawMessage(`{"request_headers_to_add":[{"header":{"value":"x"}}]}`)); err == nil {
		t.Fatal("missing key accepted")
	}
}
