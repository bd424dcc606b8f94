package http2_test

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// block writes the header block blk as a HEADERS frame and CONTINUATION frames of at most
// frag bytes each, and returns the first write error.
func (rc *rawClient) block(id uint32, end bool, blk []byte, frag int) error {
	for first := true; first || len(blk) > 0; first = false {
		n := min(len(blk), frag)
		last := n == len(blk)
		var err error
		if first {
			err = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk[:n], EndStream: end, EndHeaders: last})
		} else {
			err = rc.fr.WriteContinuation(id, last, blk[:n])
		}
		if err != nil {
			return err
		}
		blk = blk[n:]
	}
	return nil
}

// encode returns the block of fields (name, value pairs) as rc's encoder writes it; with
// literal the regular fields are never indexed (each one travels in full).
func (rc *rawClient) encode(literal bool, fields ...string) []byte {
	rc.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		f := hpack.HeaderField{Name: fields[i], Value: fields[i+1]}
		f.Sensitive = literal && !f.IsPseudo()
		_ = rc.enc.WriteField(f)
	}
	return bytes.Clone(rc.hb.Bytes())
}

// recordHandler answers 200 "ok" and sends each request's regular fields to seen.
func recordHandler(seen chan<- []hpack.HeaderField) h2.Handler {
	return handlerFunc(func(st *h2.ServerStream) {
		seen <- st.Header
		_ = st.WriteResponse(200, nil, []byte("ok"), true)
	})
}

// sendAsync runs send on its own goroutine (the server may stop reading part way) and
// closes the connection and waits for it at the end of the test.
func sendAsync(t *testing.T, rc *rawClient, send func()) {
	done := make(chan struct{})
	go func() { defer close(done); send() }()
	t.Cleanup(func() { rc.c.Close(); <-done })
}

// TestServerHeaderBlockByteLimit (ROBUSTNESS.md case 11, CVE-2023-45288, CVE-2024-27919):
// a header list is bounded by its decoded size, however it is split and compressed. With
// a 16 KiB MaxHeaderListSize, fields of 4000 'a's (Huffman: 5 bits each, 2500 bytes on
// the wire) in large HEADERS and CONTINUATION fragments cut in the middle of a string:
// 12 KB decoded is served with the values intact; 32 KB decoded is answered 431 without
// the handler and the connection goes on; 160 KB decoded (100 KB on the wire in 16 KiB
// frames) ends the connection with GOAWAY(ENHANCE_YOUR_CALM, "header_list_flood") once
// past 4× the limit, the byte limit and not the 256-frame CONTINUATION limit.
func TestServerHeaderBlockByteLimit(t *testing.T) {
	seen := make(chan []hpack.HeaderField, 8)
	rc, _ := serve(t, h2.ServerOptions{MaxHeaderListSize: 16 << 10}, recordHandler(seen))
	value := strings.Repeat("a", 4000)
	fields := func(n int) []string {
		f := get("/")
		for range n {
			f = append(f, "x-h", value)
		}
		return f
	}

	blk := rc.encode(true, fields(3)...)
	if len(blk) > 3*2600 {
		t.Fatalf("block of %d bytes: the values were not Huffman-coded", len(blk))
	}
	if err := rc.block(1, true, blk, len(blk)/3+1); err != nil {
		t.Fatal(err)
	}
	if status, _, body, _ := rc.response(1); status != "200" || body != "ok" {
		t.Fatalf("under the limit: %s %q", status, body)
	}
	if hdr := <-seen; len(hdr) != 3 || hdr[0].Value != value || hdr[2].Value != value {
		t.Fatalf("the handler got %d fields", len(hdr))
	}

	if err := rc.block(3, true, rc.encode(true, fields(8)...), 16<<10); err != nil {
		t.Fatal(err)
	}
	if status, _, _, _ := rc.response(3); status != "431" {
		t.Fatalf("over the limit: %s, want 431", status)
	}
	rc.headers(5, true, get("/after")...)
	if status, _, _, _ := rc.response(5); status != "200" {
		t.Fatalf("after the 431: %s", status)
	}
	<-seen

	blk = rc.encode(true, fields(40)...)
	sendAsync(t, rc, func() {
		_ = rc.block(7, true, blk, 16<<10)
		_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	ga := rc.goAway()
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "header_list_flood" {
		t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM header_list_flood", ga.ErrCode, ga.DebugData())
	}
	select {
	case hdr := <-seen:
		t.Fatalf("the handler got a request of %d fields", len(hdr))
	default:
	}
}

// TestServerHPACKAbuse (ROBUSTNESS.md case 18): HPACK state the peer abuses. The server
// advertises no SETTINGS_HEADER_TABLE_SIZE, so a header block that raises the dynamic
// table past the default 4096 is a COMPRESSION_ERROR (RFC 7541 §4.2, §6.3); a size update
// within it is accepted. An HPACK bomb (one 4 KB field in the dynamic table, then
// referenced by a 1-byte index over and over) is bounded by the decoded size like any
// other list: 3 references are served, 10 are answered 431 (and the table stays in step:
// the next request that uses it is served), 100000 (100 KB on the wire, 400 MB decoded)
// end the connection with GOAWAY(ENHANCE_YOUR_CALM, "header_list_flood") after
// 64 KiB decoded, with the heap hardly touched. A field name over the list limit is
// answered 431; one over twice the limit ends the connection (COMPRESSION_ERROR), as the
// decoder stops reading strings there.
func TestServerHPACKAbuse(t *testing.T) {
	opts := h2.ServerOptions{MaxHeaderListSize: 16 << 10}

	t.Run("table size update over the limit", func(t *testing.T) {
		rc, _ := serve(t, opts, recordHandler(make(chan []hpack.HeaderField, 1)))
		rc.enc.SetMaxDynamicTableSizeLimit(1 << 20)
		rc.enc.SetMaxDynamicTableSize(1 << 20)
		blk := rc.encode(false, get("/")...)
		sendAsync(t, rc, func() {
			_ = rc.block(1, true, blk, len(blk))
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		})
		if ga := rc.goAway(); ga.ErrCode != http2.ErrCodeCompression {
			t.Fatalf("GOAWAY %v %q, want COMPRESSION_ERROR", ga.ErrCode, ga.DebugData())
		}
	})

	t.Run("table size update within the limit", func(t *testing.T) {
		rc, _ := serve(t, opts, recordHandler(make(chan []hpack.HeaderField, 2)))
		rc.enc.SetMaxDynamicTableSize(0)
		rc.headers(1, true, get("/")...)
		if status, _, _, _ := rc.response(1); status != "200" {
			t.Fatal(status)
		}
		rc.enc.SetMaxDynamicTableSize(4096)
		rc.headers(3, true, get("/")...)
		if status, _, _, _ := rc.response(3); status != "200" {
			t.Fatal(status)
		}
	})

	t.Run("bomb", func(t *testing.T) {
		seen := make(chan []hpack.HeaderField, 8)
		rc, _ := serve(t, opts, recordHandler(seen))
		bomb := strings.Repeat("0123456789abcdef", 250) // 4000 bytes
		// The encoder indexes ":authority: example" (49 bytes in the table), then the
		// bomb (4038): the bomb is dynamic index 62, the authority 63.
		rc.headers(1, true, append(get("/"), "x-bomb", bomb)...)
		if status, _, _, _ := rc.response(1); status != "200" {
			t.Fatal(status)
		}
		<-seen
		// :method GET, :scheme http, :path / (static), :authority (dynamic 63), then n
		// references to the bomb.
		refs := func(n int) []byte {
			return append([]byte{0x82, 0x86, 0x84, 0x80 | 63}, bytes.Repeat([]byte{0x80 | 62}, n)...)
		}

		if err := rc.block(3, true, refs(3), 16<<10); err != nil {
			t.Fatal(err)
		}
		if status, _, _, _ := rc.response(3); status != "200" {
			t.Fatalf("3 references: %s", status)
		}
		if hdr := <-seen; len(hdr) != 3 || hdr[0].Name != "x-bomb" || hdr[2].Value != bomb {
			t.Fatalf("3 references decoded to %d fields", len(hdr))
		}

		if err := rc.block(5, true, refs(10), 16<<10); err != nil {
			t.Fatal(err)
		}
		if status, _, _, _ := rc.response(5); status != "431" {
			t.Fatalf("10 references: %s, want 431", status)
		}
		if err := rc.block(7, true, refs(1), 16<<10); err != nil {
			t.Fatal(err)
		}
		if status, _, _, _ := rc.response(7); status != "200" {
			t.Fatalf("after the 431: %s", status)
		}
		if hdr := <-seen; len(hdr) != 1 || hdr[0].Value != bomb {
			t.Fatalf("after the 431 the reference decoded to %v fields", len(hdr))
		}

		blk := refs(100000)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sendAsync(t, rc, func() {
			_ = rc.block(9, true, blk, 16<<10)
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		})
		ga, err := rc.untilClosed()
		runtime.ReadMemStats(&after)
		t.Logf("%d bytes allocated while the bomb was sent and decoded", after.TotalAlloc-before.TotalAlloc)
		if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
			t.Errorf("%d bytes allocated while the bomb was decoded", n)
		}
		switch {
		case ga == nil:
			t.Fatalf("connection closed without GOAWAY: %v", err)
		case ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "header_list_flood":
			t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM header_list_flood", ga.ErrCode, ga.DebugData())
		case err == nil:
			t.Fatal("connection open after GOAWAY")
		}
		select {
		case hdr := <-seen:
			t.Fatalf("the handler got a request of %d fields", len(hdr))
		default:
		}
	})

	t.Run("large field name", func(t *testing.T) {
		rc, _ := serve(t, opts, recordHandler(make(chan []hpack.HeaderField, 1)))
		rc.headers(1, true, append(get("/"), strings.Repeat("n", 20000), "v")...)
		if status, _, _, _ := rc.response(1); status != "431" {
			t.Fatalf("name over the limit: %s, want 431", status)
		}
		blk := rc.encode(false, append(get("/"), strings.Repeat("n", 40000), "v")...)
		sendAsync(t, rc, func() {
			_ = rc.block(3, true, blk, 16<<10)
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		})
		if ga := rc.goAway(); ga.ErrCode != http2.ErrCodeCompression {
			t.Fatalf("name over twice the limit: GOAWAY %v %q, want COMPRESSION_ERROR", ga.ErrCode, ga.DebugData())
		}
	})
}
