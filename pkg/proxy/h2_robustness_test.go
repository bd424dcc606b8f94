package proxy_test

import (
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mosnlite/mosnlite/pkg/stream"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// h2Raw is a raw HTTP/2 client connection to the proxy: it has sent the preface and an
// empty SETTINGS, and returns the server's first SETTINGS.
func h2Raw(t *testing.T, addr string) (*http2.Framer, *http2.SettingsFrame) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte(h2stream.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = fr.WriteSettingsAck()
			return fr, sf
		}
	}
}

// TestH2AdvertisesStreamLimit: the HTTP/2 listener advertises
// SETTINGS_MAX_CONCURRENT_STREAMS 100 (ROBUSTNESS 14: a small limit, not an unbounded one).
func TestH2AdvertisesStreamLimit(t *testing.T) {
	o := h2Origin(t, h2echo)
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	_, sf := h2Raw(t, e.addr)
	v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
	if !ok || v != 100 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent %v), want 100", v, ok)
	}
}

// TestH2MalformedRequestsNeverForwarded: HTTP/2 requests with an upper-case field name, a
// connection-specific field, a missing or repeated pseudo-header, or a pseudo-header after
// a regular field are reset with PROTOCOL_ERROR and never reach the HTTP/1 upstream
// (ROBUSTNESS 17); a well-formed request on the same connection afterwards is served.
func TestH2MalformedRequestsNeverForwarded(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	e := startH2Proxy(t, o.addr(), stream.HTTP2, stream.HTTP1)
	fr, _ := h2Raw(t, e.addr)
	good := [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}}
	bad := map[string][][2]string{
		"upper-case name":     append(good, [2]string{"X-Upper", "1"}),
		"connection field":    append(good, [2]string{"connection", "keep-alive"}),
		"transfer-encoding":   append(good, [2]string{"transfer-encoding", "chunked"}),
		"missing :path":       good[:3],
		"repeated :method":    append([][2]string{{":method", "GET"}}, good...),
		"pseudo after field":  append([][2]string{{":method", "GET"}, {":scheme", "http"}, {"x-a", "1"}}, good[2:]...),
		"te other than trail": append(good, [2]string{"te", "gzip"}),
	}
	var hb bytes.Buffer
	send := func(id uint32, fields [][2]string) {
		hb.Reset()
		enc := hpack.NewEncoder(&hb)
		for _, f := range fields {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	id := uint32(1)
	for name, fields := range bad {
		send(id, fields)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == id {
				if rst.ErrCode != http2.ErrCodeProtocol {
					t.Errorf("%s: RST_STREAM %v, want PROTOCOL_ERROR", name, rst.ErrCode)
				}
				break
			}
			if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == id {
				t.Fatalf("%s: answered with headers %v", name, mh.Fields)
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("%s: GOAWAY %v", name, ga.ErrCode)
			}
		}
		id += 2
	}
	send(id, good)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == id {
			if s := mh.PseudoValue("status"); s != "200" {
				t.Fatalf("well-formed request: status %s", s)
			}
			break
		}
	}
	if n := o.reqs.Load(); n != 1 {
		t.Fatalf("the upstream got %d requests, want only the well-formed one", n)
	}
}
