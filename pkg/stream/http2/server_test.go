package http2_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// handlerFunc adapts a function to h2.Handler; each stream runs on its own goroutine.
type handlerFunc func(st *h2.ServerStream)

func (f handlerFunc) ServeStream(st *h2.ServerStream) {
	go func() {
		defer st.Done()
		f(st)
	}()
}

// rawClient is an HTTP/2 client driven frame by frame with x/net's Framer.
type rawClient struct {
	t   testing.TB
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
	dec *hpack.Decoder
}

// serve starts Serve on one end of a loopback TCP connection and returns a client on
// the other, preface and SETTINGS sent and the server's SETTINGS read. extra are the
// client's SETTINGS.
func serve(t testing.TB, opts h2.ServerOptions, h h2.Handler, extra ...http2.Setting) (*rawClient, chan *h2.ServerConn) {
	t.Helper()
	cli, srv := tcpPair(t)
	return serveConn(t, cli, srv, opts, h, extra...)
}

// serveConn is serve on a given connection pair (cli the client's end, srv the server's).
func serveConn(t testing.TB, cli, srv net.Conn, opts h2.ServerOptions, h h2.Handler, extra ...http2.Setting) (*rawClient, chan *h2.ServerConn) {
	t.Helper()
	pool := buffer.NewPool()
	nc := network.NewConn(srv, network.ConnOptions{Pool: pool})
	scs := make(chan *h2.ServerConn, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h2.Serve(nc, pool, opts, h, func(sc *h2.ServerConn, open bool) {
			if open {
				scs <- sc
			}
		})
	}()
	t.Cleanup(func() {
		cli.Close()
		nc.Close("")
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return newRawClient(t, cli, extra...), scs
}

// newRawClient starts the client side of HTTP/2 on c (a 10s deadline): preface and
// SETTINGS (extra) sent, the server's SETTINGS read.
func newRawClient(t testing.TB, c net.Conn, extra ...http2.Setting) *rawClient {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.enc = hpack.NewEncoder(&rc.hb)
	rc.dec = hpack.NewDecoder(4096, nil)
	rc.fr.ReadMetaHeaders = rc.dec
	if _, err := io.WriteString(c, h2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(extra...); err != nil {
		t.Fatal(err)
	}
	f := rc.next()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("first server frame: %v, want SETTINGS", f)
	}
	return rc
}

// next reads frames, answering SETTINGS, until one that is not a SETTINGS (ACK) or
// connection WINDOW_UPDATE.
func (rc *rawClient) next() http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if err := rc.fr.WriteSettingsAck(); err != nil {
				rc.t.Fatal(err)
			}
			return f
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				continue
			}
		}
		return f
	}
}

func (rc *rawClient) headers(id uint32, end bool, fields ...string) {
	rc.t.Helper()
	if err := rc.tryHeaders(id, end, fields...); err != nil {
		rc.t.Fatal(err)
	}
}

// tryHeaders writes a HEADERS frame and returns the write error (a flood's sender).
func (rc *rawClient) tryHeaders(id uint32, end bool, fields ...string) error {
	rc.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hb.Bytes(), EndStream: end, EndHeaders: true})
}

func get(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "example", ":path", path}
}

func post(path string) []string {
	return []string{":method", "POST", ":scheme", "http", ":authority", "example", ":path", path}
}

// response reads one stream's response: status, fields, body, trailers.
func (rc *rawClient) response(id uint32) (status string, hdr map[string]string, body string, trailers map[string]string) {
	rc.t.Helper()
	hdr = map[string]string{}
	var b strings.Builder
	for {
		switch f := rc.next().(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				rc.t.Fatalf("headers on stream %d, want %d", f.StreamID, id)
			}
			if status == "" {
				status = f.PseudoValue("status")
				for _, hf := range f.RegularFields() {
					hdr[hf.Name] = hf.Value
				}
			} else {
				trailers = map[string]string{}
				for _, hf := range f.RegularFields() {
					trailers[hf.Name] = hf.Value
				}
			}
			if f.StreamEnded() {
				return status, hdr, b.String(), trailers
			}
		case *http2.DataFrame:
			b.Write(f.Data())
			if f.StreamEnded() {
				return status, hdr, b.String(), trailers
			}
		case *http2.RSTStreamFrame:
			rc.t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY: %v %q", f.ErrCode, f.DebugData())
		}
	}
}

func TestServerRequestResponseAndTrailers(t *testing.T) {
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		if st.Method != "GET" || st.Path != "/a?b=1" || st.Authority != "example" || st.HasBody() {
			t.Errorf("request head: %s %s %s body=%v", st.Method, st.Path, st.Authority, st.HasBody())
		}
		var ua string
		for _, f := range st.Header {
			if f.Name == "user-agent" {
				ua = f.Value
			}
		}
		_ = st.WriteHeaders(200, false, func(w h2.FieldWriter) {
			w.Field("x-ua", ua)
			w.Field("connection", "close") // connection-specific: dropped
			w.FieldBytes([]byte("X-Mixed-Case"), []byte("v"))
		})
		_, _ = st.Write([]byte("hello "))
		_ = st.WriteData([]byte("world"), false)
		_ = st.WriteTrailers(func(w h2.FieldWriter) { w.Field("grpc-status", "0") })
	}))
	rc.headers(1, true, append(get("/a?b=1"), "user-agent", "raw")...)
	status, hdr, body, tr := rc.response(1)
	if status != "200" || hdr["x-ua"] != "raw" || hdr["x-mixed-case"] != "v" || body != "hello world" || tr["grpc-status"] != "0" {
		t.Fatalf("got %s %v %q %v", status, hdr, body, tr)
	}
	if _, ok := hdr["connection"]; ok {
		t.Fatal("connection field was sent")
	}
}

func TestServerRequestBodyAndWindowUpdates(t *testing.T) {
	const size = 600 << 10 // more than the stream window: needs WINDOW_UPDATEs
	got := make(chan int, 1)
	rc, _ := serve(t, h2.ServerOptions{StreamWindow: 64 << 10}, handlerFunc(func(st *h2.ServerStream) {
		n, err := io.Copy(io.Discard, st)
		if err != nil {
			t.Errorf("body: %v", err)
		}
		got <- int(n)
		_ = st.WriteHeaders(204, true, nil)
	}))
	rc.headers(1, false, post("/up")...)
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	sent, credit := 0, 64<<10
	for sent < size {
		for credit < len(chunk) {
			f := rc.next()
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 1 {
				credit += int(wu.Increment)
			}
		}
		if err := rc.fr.WriteData(1, sent+len(chunk) >= size, chunk); err != nil {
			t.Fatal(err)
		}
		sent += len(chunk)
		credit -= len(chunk)
	}
	if n := <-got; n != sent {
		t.Fatalf("handler read %d bytes, sent %d", n, sent)
	}
	for {
		if hf, ok := rc.next().(*http2.MetaHeadersFrame); ok {
			if hf.PseudoValue("status") != "204" {
				t.Fatalf("status %s", hf.PseudoValue("status"))
			}
			return
		}
	}
}

// TestServerHeadResponseHasNoContent: the body a handler writes for a HEAD request is
// dropped; the response ends with HEADERS (or an empty DATA) and END_STREAM.
func TestServerHeadResponseHasNoContent(t *testing.T) {
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		_ = st.WriteResponse(200, func(w h2.FieldWriter) { w.Field("content-length", "5") }, []byte("hello"), true)
	}))
	rc.headers(1, true, ":method", "HEAD", ":scheme", "http", ":authority", "example", ":path", "/")
	status, hdr, body, _ := rc.response(1)
	if status != "200" || hdr["content-length"] != "5" || body != "" {
		t.Fatalf("HEAD: %s %v %q", status, hdr, body)
	}
}

func TestServerSendFlowControl(t *testing.T) {
	body := bytes.Repeat([]byte("y"), 1000)
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		_ = st.WriteResponse(200, nil, body, true)
	}), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	rc.headers(1, true, get("/")...)
	if hf, ok := rc.next().(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "200" {
		t.Fatal("no response head")
	}
	got := 0
	for got < 100 {
		df := rc.next().(*http2.DataFrame)
		got += len(df.Data())
	}
	if got != 100 {
		t.Fatalf("server sent %d bytes into a 100-byte window", got)
	}
	// Nothing more may come until the window opens.
	_ = rc.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if f, err := rc.fr.ReadFrame(); err == nil {
		t.Fatalf("frame beyond the window: %v", f)
	}
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := rc.fr.WriteWindowUpdate(1, 900); err != nil {
		t.Fatal(err)
	}
	for got < len(body) {
		df := rc.next().(*http2.DataFrame)
		got += len(df.Data())
		if got == len(body) && !df.StreamEnded() {
			t.Fatal("last DATA without END_STREAM")
		}
	}
}

// TestServerStalledWindowResetsStream: a peer that never opens its flow-control window
// gets the stream reset after SendStallTimeout, and the handler's write returns.
func TestServerStalledWindowResetsStream(t *testing.T) {
	werr := make(chan error, 1)
	rc, _ := serve(t, h2.ServerOptions{SendStallTimeout: 100 * time.Millisecond}, handlerFunc(func(st *h2.ServerStream) {
		werr <- st.WriteResponse(200, nil, []byte("more than the window"), true)
	}), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4})
	rc.headers(1, true, get("/")...)
	for {
		if rst, ok := rc.next().(*http2.RSTStreamFrame); ok {
			if rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("got %v", rst)
			}
			break
		}
	}
	select {
	case err := <-werr:
		if !errors.Is(err, h2.ErrStreamReset) {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's write did not return")
	}
}

func TestServerPeerResetReachesHandler(t *testing.T) {
	fired := make(chan struct{})
	readErr := make(chan error, 1)
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		if !st.OnReset(func() { close(fired) }) {
			t.Error("stream already reset")
		}
		_, err := st.Read(make([]byte, 10))
		readErr <- err
		if err := st.WriteHeaders(200, true, nil); !errors.Is(err, h2.ErrStreamReset) {
			t.Errorf("write after reset: %v", err)
		}
	}))
	rc.headers(1, false, post("/")...)
	time.Sleep(10 * time.Millisecond) // let the handler block in Read
	if err := rc.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("reset hook not called")
	}
	if err := <-readErr; !errors.Is(err, h2.ErrStreamReset) {
		t.Fatalf("read: %v", err)
	}
}

func TestServerRefusesStreamsOverTheLimit(t *testing.T) {
	release := make(chan struct{})
	rc, _ := serve(t, h2.ServerOptions{MaxConcurrentStreams: 1}, handlerFunc(func(st *h2.ServerStream) {
		<-release
		_ = st.WriteHeaders(200, true, nil)
	}))
	rc.headers(1, true, get("/")...)
	rc.headers(3, true, get("/")...)
	rst, ok := rc.next().(*http2.RSTStreamFrame)
	if !ok || rst.StreamID != 3 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("got %v, want RST_STREAM(3, REFUSED_STREAM)", rst)
	}
	close(release)
	if status, _, _, _ := rc.response(1); status != "200" {
		t.Fatal(status)
	}
}

func TestServerHeaderListTooLarge(t *testing.T) {
	rc, _ := serve(t, h2.ServerOptions{MaxHeaderListSize: 1024}, handlerFunc(func(st *h2.ServerStream) {
		t.Error("handler called for an oversized head")
		_ = st.WriteHeaders(200, true, nil)
	}))
	rc.headers(1, true, append(get("/"), "x-big", strings.Repeat("b", 2000))...)
	if status, _, _, _ := rc.response(1); status != "431" {
		t.Fatalf("status %s, want 431", status)
	}
}

// TestServerShutdownDrainsThenCloses: Shutdown sends the shutdown notice (GOAWAY with
// last stream 2^31-1) and a PING; a stream the client opened before it saw the notice is
// still served; the PING's acknowledgement brings the final GOAWAY naming that stream;
// the streams in flight complete, then the connection closes.
func TestServerShutdownDrainsThenCloses(t *testing.T) {
	release := make(chan struct{})
	rc, scs := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		<-release
		_ = st.WriteResponse(200, nil, []byte("done "+st.Path), true)
	}))
	rc.headers(1, true, get("/1")...)
	sc := <-scs
	go sc.Shutdown()
	ga, ok := rc.next().(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1<<31-1 {
		t.Fatalf("got %v, want the shutdown notice GOAWAY(last 2^31-1, NO_ERROR)", ga)
	}
	ping, ok := rc.next().(*http2.PingFrame)
	if !ok || ping.IsAck() {
		t.Fatalf("got %v, want a PING after the notice", ping)
	}
	rc.headers(3, true, get("/3")...) // sent before the client read the notice
	if err := rc.fr.WritePing(true, ping.Data); err != nil {
		t.Fatal(err)
	}
	ga, ok = rc.next().(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 3 {
		t.Fatalf("got %v, want the final GOAWAY(last 3, NO_ERROR)", ga)
	}
	close(release)
	got := map[uint32]string{}
	for len(got) < 2 {
		switch f := rc.next().(type) {
		case *http2.DataFrame:
			got[f.StreamID] += string(f.Data())
		case *http2.MetaHeadersFrame:
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if got[1] != "done /1" || got[3] != "done /3" {
		t.Fatalf("streams in flight: %v", got)
	}
	if _, err := rc.fr.ReadFrame(); err == nil {
		t.Fatal("connection still open after the last stream")
	}
}

// TestServerShutdownAfterFirstStream: a connection told to shut down before its client
// opened a stream sends nothing until the first stream opens; that stream is served,
// and the shutdown (notice, then the final GOAWAY naming it) follows.
func TestServerShutdownAfterFirstStream(t *testing.T) {
	rc, scs := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		_ = st.WriteResponse(200, nil, []byte("first"), true)
	}))
	sc := <-scs
	sc.ShutdownAfterFirstStream()
	// Nothing is sent while the client has not opened a stream (SETTINGS aside).
	_ = rc.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			break // the deadline: nothing came
		}
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if !sf.IsAck() {
				_ = rc.fr.WriteSettingsAck()
			}
			continue
		}
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
			continue
		}
		t.Fatalf("sent before the first stream: %v", f)
	}
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rc.headers(1, true, get("/")...)
	var status, body string
	var notice, final *http2.GoAwayFrame
	ended := false
	for final == nil || !ended {
		switch f := rc.next().(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body += string(f.Data())
			ended = f.StreamEnded()
		case *http2.GoAwayFrame:
			if notice == nil {
				notice = f
			} else {
				final = f
			}
		case *http2.PingFrame:
			if err := rc.fr.WritePing(true, f.Data); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if status != "200" || body != "first" {
		t.Fatalf("first stream: %s %q; want it served", status, body)
	}
	if notice.LastStreamID != 1<<31-1 || final.LastStreamID != 1 {
		t.Fatalf("GOAWAYs last stream %d then %d; want 2^31-1 then 1", notice.LastStreamID, final.LastStreamID)
	}
	if _, err := rc.fr.ReadFrame(); err == nil {
		t.Fatal("connection still open after the final GOAWAY")
	}
}

// TestServerShutdownWithoutPingAck: a client that never acknowledges the shutdown PING
// still gets the final GOAWAY after shutdownAckWait, and an idle connection then closes.
func TestServerShutdownWithoutPingAck(t *testing.T) {
	rc, scs := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		_ = st.WriteResponse(200, nil, []byte("ok"), true)
	}))
	rc.headers(1, true, get("/")...)
	if _, _, body, _ := rc.response(1); body != "ok" {
		t.Fatalf("body %q", body)
	}
	sc := <-scs
	go sc.Shutdown()
	var final *http2.GoAwayFrame
	for final == nil {
		switch f := rc.next().(type) {
		case *http2.GoAwayFrame:
			if f.LastStreamID != 1<<31-1 {
				final = f
			}
		case *http2.PingFrame: // not acknowledged
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if final.LastStreamID != 1 {
		t.Fatalf("final GOAWAY last stream %d, want 1", final.LastStreamID)
	}
	if _, err := rc.fr.ReadFrame(); err == nil {
		t.Fatal("idle connection still open after the final GOAWAY")
	}
}

// TestServerProtocolErrors: each peer misbehaviour ends the connection with GOAWAY and
// the expected code, then a close; where debug is set, the GOAWAY's debug data (the kind
// reported to OnProtocolError) names the rule that ended it. Cases whose flood the server
// would otherwise accept end with the client's own GOAWAY, so that without the rule the
// server closes gracefully at once (no GOAWAY of its own) and the case fails fast.
func TestServerProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		send  func(rc *rawClient)
		code  http2.ErrCode
		debug string
	}{
		{"data on idle stream", func(rc *rawClient) { _ = rc.fr.WriteData(5, true, []byte("x")) }, http2.ErrCodeProtocol, ""},
		{"even stream id", func(rc *rawClient) { rc.headers(2, true, get("/")...) }, http2.ErrCodeProtocol, ""},
		{"push promise", func(rc *rawClient) {
			_ = rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol, ""},
		{"window overflow", func(rc *rawClient) { _ = rc.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl, ""},
		// RFC 9113 §6.9: an increment of 0 on the connection is a connection error.
		{"window update zero", func(rc *rawClient) {
			rc.fr.AllowIllegalWrites = true
			_ = rc.fr.WriteWindowUpdate(0, 0)
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, http2.ErrCodeProtocol, "window_update_zero"},
		// RFC 9113 §6.10: a header block is contiguous; a CONTINUATION for another stream
		// in the middle of one is a connection error (ROBUSTNESS.md case 15).
		{"continuation on another stream", func(rc *rawClient) {
			rc.hb.Reset()
			fields := get("/")
			for i := 0; i+1 < len(fields); i += 2 {
				_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			blk := rc.hb.Bytes()
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:2], EndStream: true})
			_ = rc.fr.WriteContinuation(3, true, blk[2:])
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, http2.ErrCodeProtocol, "continuation_unexpected"},
		// PRIORITY churn (CVE-2019-9513): no stream opened, so 100 PRIORITY frames at most.
		{"priority flood", func(rc *rawClient) {
			for i := range uint32(1000) {
				_ = rc.fr.WritePriority(2*i+3, http2.PriorityParam{StreamDep: 2*i + 1, Weight: uint8(i)})
			}
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, http2.ErrCodeEnhanceYourCalm, "priority_flood"},
		// WINDOW_UPDATE frames that no DATA we sent justifies.
		{"window update flood", func(rc *rawClient) {
			for range 1000 {
				_ = rc.fr.WriteWindowUpdate(0, 1)
			}
			_ = rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}, http2.ErrCodeEnhanceYourCalm, "window_update_flood"},
		{"rapid reset", func(rc *rawClient) {
			for id := uint32(1); id < 2*300; id += 2 {
				_ = rc.tryHeaders(id, true, get("/")...)
				_ = rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}, http2.ErrCodeEnhanceYourCalm, "rapid_reset"},
		{"invalid request flood", func(rc *rawClient) {
			for id := uint32(1); id < 2*1100; id += 2 {
				_ = rc.tryHeaders(id, true, append(get("/"), "Upper", "x")...)
			}
			// Either too_many_stream_errors, or first control_frame_flood when the
			// RST_STREAMs pile up unread.
		}, http2.ErrCodeEnhanceYourCalm, ""},
		{"empty data flood", func(rc *rawClient) {
			_ = rc.tryHeaders(1, false, post("/")...)
			for range 1100 {
				_ = rc.fr.WriteData(1, false, nil)
			}
		}, http2.ErrCodeEnhanceYourCalm, "too_many_empty_frames"},
		{"continuation flood", func(rc *rawClient) {
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}})
			for range 300 {
				_ = rc.fr.WriteContinuation(1, false, []byte{0x82})
			}
		}, http2.ErrCodeEnhanceYourCalm, "continuation_flood"},
		{"bad hpack", func(rc *rawClient) {
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression, "hpack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kinds []string
			rc, _ := serve(t, h2.ServerOptions{OnProtocolError: func(k string) { kinds = append(kinds, k) }},
				handlerFunc(func(st *h2.ServerStream) {
					// A slow upstream: the answer comes after a while, unless the stream is reset.
					reset := make(chan struct{})
					if st.OnReset(func() { close(reset) }) {
						select {
						case <-reset:
							return
						case <-time.After(200 * time.Millisecond):
						}
					}
					_ = st.WriteHeaders(200, true, nil)
				}))
			sent := make(chan struct{})
			go func() { defer close(sent); tc.send(rc) }() // the server may stop reading (GOAWAY) mid-flood
			defer func() { rc.c.Close(); <-sent }()
			for {
				f, err := rc.fr.ReadFrame()
				if err != nil {
					t.Fatalf("connection closed without GOAWAY: %v", err)
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					if ga.ErrCode != tc.code {
						t.Fatalf("GOAWAY %v %q, want %v", ga.ErrCode, ga.DebugData(), tc.code)
					}
					if tc.debug != "" && string(ga.DebugData()) != tc.debug {
						t.Fatalf("GOAWAY debug data %q, want %q", ga.DebugData(), tc.debug)
					}
					break
				}
			}
			if _, err := rc.fr.ReadFrame(); err == nil {
				t.Fatal("connection open after GOAWAY")
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (cli, srv net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if cli, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if srv, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

func TestServerBadPrefaceCloses(t *testing.T) {
	cli, srv := tcpPair(t)
	defer cli.Close()
	pool := buffer.NewPool()
	errc := make(chan error, 1)
	go func() {
		errc <- h2.Serve(network.NewConn(srv, network.ConnOptions{Pool: pool}), pool, h2.ServerOptions{}, handlerFunc(func(*h2.ServerStream) {}), nil)
	}()
	_, _ = io.WriteString(cli, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case err := <-errc:
		if !errors.Is(err, h2.ErrBadPreface) {
			t.Fatalf("Serve: %v, want ErrBadPreface", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end")
	}
}

// FuzzH2Frames feeds arbitrary frames after a valid preface and SETTINGS: the server
// must not panic and must end the connection when the peer goes away.
func FuzzH2Frames(f *testing.F) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	fields := get("/seed")
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	var seed bytes.Buffer
	fr := http2.NewFramer(&seed, nil)
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, true, []byte("body"))
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteWindowUpdate(0, 1000)
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 0, 1})                  // CONTINUATION without HEADERS
	f.Add([]byte{0, 0, 5, 1, 0x8, 0, 0, 0, 1, 9, 0, 0, 0, 0}) // padding longer than the payload
	f.Fuzz(func(t *testing.T, frames []byte) {
		cli, srv := net.Pipe()
		pool := buffer.NewPool()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = h2.Serve(network.NewConn(srv, network.ConnOptions{Pool: pool}), pool, h2.ServerOptions{},
				handlerFunc(func(st *h2.ServerStream) { _ = st.WriteResponse(200, nil, []byte("ok"), true) }), nil)
		}()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		msg := append([]byte(h2.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0)
		_ = cli.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = cli.Write(append(msg, frames...))
		cli.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not end after the peer closed")
		}
	})
}
