package dubbo

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// TestFlatAttachmentsMatchLibrary: the allocation-free path gives the headers and timeout
// the dubbo-go-hessian2 path gives, and does not allocate.
func TestFlatAttachmentsMatchLibrary(t *testing.T) {
	c := New(Options{})
	reqs := []Request{
		{ID: 1, Service: "com.example.Echo", Version: "1.0.0", Group: "g1", Method: "echo", Timeout: 1500 * time.Millisecond,
			Args: []any{"hello", int32(3)}, Attachments: map[string]string{"zz": "last", "aa": "first", "empty": "", "trace": "äöü"}},
		{ID: 2, Service: "svc", Method: "m"},
		{ID: 3, Service: "svc", Method: "m", Args: []any{[]any{"x", int64(1)}, map[string]any{"k": "v"}}},
		{ID: 4, Service: "svc", Method: "m", Attachments: map[string]string{"service": "other", "method": "other"}},
	}
	for _, r := range reqs {
		raw, err := r.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		var f xprotocol.Frame
		if _, err := c.Decode(raw, &f); err != nil {
			t.Fatal(err)
		}
		want, err := c.Attachments(&f)
		if err != nil {
			t.Fatal(err)
		}
		base := len(f.Headers)
		if !c.flatAttachments(&f) {
			t.Fatalf("request %d: not handled by the flat path", r.ID)
		}
		got := map[string]string{}
		prev := ""
		for _, h := range f.Headers[base:] {
			if string(h.Key) < prev {
				t.Fatalf("request %d: headers not sorted", r.ID)
			}
			prev = string(h.Key)
			got[string(h.Key)] = string(h.Value)
		}
		for k, v := range want {
			if _, body := map[string]bool{"service": true, "method": true, "version": true}[k]; body {
				continue
			}
			if got[k] != v {
				t.Fatalf("request %d: %q = %q, library %q", r.ID, k, got[k], v)
			}
		}
		if len(got) > len(want) {
			t.Fatalf("request %d: extra headers %v (library %v)", r.ID, got, want)
		}
		if f.Timeout != r.Timeout {
			t.Fatalf("request %d: timeout %v, want %v", r.ID, f.Timeout, r.Timeout)
		}
	}
	raw, _ := reqs[0].Bytes()
	var f xprotocol.Frame
	allocs := testing.AllocsPerRun(100, func() {
		f.Reset()
		if _, err := c.Decode(raw, &f); err != nil {
			t.Fatal(err)
		}
		if err := c.DecodeAttachments(&f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per decode with attachments", allocs)
	}
}
