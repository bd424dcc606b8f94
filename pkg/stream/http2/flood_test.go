package http2_test

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// waitFor polls cond every few milliseconds until it holds or the deadline passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// goAway reads frames until GOAWAY and returns it; the connection must then close.
func (rc *rawClient) goAway() *http2.GoAwayFrame {
	rc.t.Helper()
	ga, err := rc.untilClosed()
	if ga == nil {
		rc.t.Fatalf("connection closed without GOAWAY: %v", err)
	}
	if err == nil {
		rc.t.Fatal("connection open after GOAWAY")
	}
	return ga
}

// untilClosed reads frames until GOAWAY and one more read: it returns the GOAWAY (nil when
// the connection ended without one) and the error of the read after it (nil: the
// connection stayed open).
func (rc *rawClient) untilClosed() (*http2.GoAwayFrame, error) {
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			_, err := rc.fr.ReadFrame()
			return ga, err
		}
	}
}

// TestServerControlFrameFloodUnread (ROBUSTNESS.md case 12, CVE-2019-9512 and -9515): a
// client asks for a response larger than the socket buffers and does not read it, so the
// handler's write holds the connection's write queue; then it sends PINGs (or empty
// SETTINGS) in chunks of 250, waiting after each until the server has queued its answers,
// still not reading. Each frame makes the server queue an ACK behind the stuck response.
// Once 1000 of them wait unwritten the connection ends with GOAWAY(ENHANCE_YOUR_CALM,
// "control_frame_flood"), the ACKs it holds staying in the tens of KiB: the 4 MiB
// write-queue bound alone lets ~120k of them pile up first. (The client reads the
// GOAWAY at the end, behind the response.)
func TestServerControlFrameFloodUnread(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame func(fr *http2.Framer) error
		ack   int // bytes of the server's answer
	}{
		{"ping", func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'f', 'l', 'o', 'o', 'd'}) }, 17},
		{"settings", func(fr *http2.Framer) error { return fr.WriteSettings() }, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const chunk = 250
			var flood bytes.Buffer // one chunk, written in one piece
			fr := http2.NewFramer(&flood, nil)
			for range chunk {
				if err := tc.frame(fr); err != nil {
					t.Fatal(err)
				}
			}

			cli, srv := tcpPair(t)
			// Small socket buffers: the response below fills them and stays in the queue.
			_ = srv.(*net.TCPConn).SetWriteBuffer(32 << 10)
			_ = cli.(*net.TCPConn).SetReadBuffer(32 << 10)
			type report struct {
				kind   string
				queued int
			}
			reports := make(chan report, 16)
			var scp atomic.Pointer[h2.ServerConn]
			opts := h2.ServerOptions{OnProtocolError: func(kind string) {
				r := report{kind, -1}
				if sc := scp.Load(); sc != nil {
					r.queued = sc.Conn().Queued()
				}
				select {
				case reports <- r:
				default:
				}
			}}
			body := make([]byte, 2<<20)
			rc, scs := serveConn(t, cli, srv, opts, handlerFunc(func(st *h2.ServerStream) {
				_ = st.WriteResponse(200, nil, body, true)
			}), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			sc := <-scs
			scp.Store(sc)
			if err := rc.fr.WriteWindowUpdate(0, 1<<30); err != nil {
				t.Fatal(err)
			}
			rc.headers(1, true, get("/big")...)
			if !waitFor(5*time.Second, func() bool { return sc.Conn().Queued() >= 1<<20 }) {
				t.Fatalf("the response did not stay queued (%d bytes)", sc.Conn().Queued())
			}
			before := sc.Conn().Queued()

			var r report
			ended := false
			for n := 1; !ended; n++ {
				if n > 2000 { // 8 MiB of answers: past every bound
					t.Fatal("the flood did not end the connection")
				}
				if _, err := cli.Write(flood.Bytes()); err != nil {
					t.Fatalf("chunk %d: %v", n, err)
				}
				if !waitFor(5*time.Second, func() bool {
					select {
					case r = <-reports:
						ended = true
						return true
					default:
					}
					return sc.Conn().Queued() >= before+n*chunk*tc.ack
				}) {
					t.Fatalf("chunk %d: neither answered nor ended", n)
				}
			}
			if r.kind != "control_frame_flood" {
				t.Errorf("closed for %q, want control_frame_flood", r.kind)
			}
			grown := r.queued - before
			t.Logf("the write queue grew by %d bytes before the close", grown)
			if grown > 64<<10 {
				t.Errorf("the write queue grew by %d bytes of ACKs before the close", grown)
			}
			if t.Failed() {
				return
			}
			ga := rc.goAway()
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "control_frame_flood" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM control_frame_flood", ga.ErrCode, ga.DebugData())
			}
		})
	}
}

// TestServerControlFramesFromAReadingPeer: the flood limits count the answers queued and
// not yet written, or grow with the streams opened and the DATA sent, so a client that
// reads its answers is never cut off however many control frames it sends over time. It
// sends 2000 PINGs (twice the outbound limit) in bursts of 100, reading the ACKs of each
// burst, a SETTINGS with each burst, PRIORITY frames for its streams, and a WINDOW_UPDATE
// for the stream and one for the connection after each DATA frame of a 1 MiB response
// (127, more than the 100 allowed without DATA); then a request is still served.
func TestServerControlFramesFromAReadingPeer(t *testing.T) {
	big := make([]byte, 1<<20)
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		if st.Path == "/big" {
			_ = st.WriteResponse(200, nil, big, true)
			return
		}
		_ = st.WriteResponse(200, nil, []byte("ok"), true)
	}))
	for burst := range 20 {
		for i := range 100 {
			if err := rc.fr.WritePing(false, [8]byte{byte(burst), byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := rc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14}); err != nil {
			t.Fatal(err)
		}
		for acks := 0; acks < 100; {
			switch f := rc.next().(type) {
			case *http2.PingFrame:
				if f.IsAck() {
					acks++
				}
			case *http2.GoAwayFrame:
				t.Fatalf("burst %d: GOAWAY %v %q", burst, f.ErrCode, f.DebugData())
			}
		}
	}
	// PRIORITY frames: Firefox-style placeholders on idle streams, then one per stream.
	for i := range uint32(5) {
		if err := rc.fr.WritePriority(101+2*i, http2.PriorityParam{Weight: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.fr.WritePriority(1, http2.PriorityParam{StreamDep: 101, Weight: 20}); err != nil {
		t.Fatal(err)
	}
	rc.headers(1, true, append(get("/big"), "x", "y")...)
	got := 0
	for got < len(big) {
		switch f := rc.next().(type) {
		case *http2.DataFrame:
			n := uint32(len(f.Data()))
			got += int(n)
			if n > 0 && !f.StreamEnded() {
				if err := rc.fr.WriteWindowUpdate(1, n); err != nil {
					t.Fatal(err)
				}
			}
			if n > 0 {
				if err := rc.fr.WriteWindowUpdate(0, n); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.GoAwayFrame:
			t.Fatalf("after %d bytes: GOAWAY %v %q", got, f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			t.Fatalf("after %d bytes: %v", got, f)
		}
	}
	if err := rc.fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 20}); err != nil {
		t.Fatal(err)
	}
	rc.headers(3, true, get("/small")...)
	if status, _, body, _ := rc.response(3); status != "200" || body != "ok" {
		t.Fatalf("after the control frames: %s %q", status, body)
	}
}

// h2Server serves HTTP/2 on 127.0.0.1:0 the way a listener does: every accepted
// connection runs Serve with the same pool, options and handler. It returns the address.
func h2Server(t *testing.T, opts h2.ServerOptions, h h2.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := buffer.NewPool()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*network.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			nc := network.NewConn(raw, network.ConnOptions{Pool: pool})
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = h2.Serve(nc, pool, opts, h, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close("")
		}
		mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return ln.Addr().String()
}

// TestServerRapidResetSparesOtherConnections (ROBUSTNESS.md case 10, CVE-2023-44487): one
// connection sends up to 10000 HEADERS+RST_STREAM pairs, leaving every tenth stream open on
// a handler that waits for its "upstream" until the stream is reset. It gets
// GOAWAY(ENHANCE_YOUR_CALM, "rapid_reset") and a close, after fewer than 1000 streams
// reached the handler. Another connection to the same server is served before, during
// and after; and once the abusive connection is gone the goroutine count is back to
// what it was before it came: its connection goroutine and every handler it started
// ended, the ones of the streams it left open included.
func TestServerRapidResetSparesOtherConnections(t *testing.T) {
	var slow atomic.Int64
	kinds := make(chan string, 16)
	addr := h2Server(t, h2.ServerOptions{OnProtocolError: func(k string) {
		select {
		case kinds <- k:
		default:
		}
	}}, handlerFunc(func(st *h2.ServerStream) {
		if st.Path == "/slow" {
			slow.Add(1)
			reset := make(chan struct{})
			if st.OnReset(func() { close(reset) }) {
				select {
				case <-reset:
					return
				case <-time.After(30 * time.Second):
				}
			}
		}
		_ = st.WriteResponse(200, nil, []byte("ok"), true)
	}))
	dial := func() *rawClient {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return newRawClient(t, c)
	}
	good := dial()
	goodID := uint32(1)
	request := func() error {
		if err := good.tryHeaders(goodID, true, get("/fast")...); err != nil {
			return err
		}
		for {
			f, err := good.fr.ReadFrame()
			if err != nil {
				return err
			}
			switch f := f.(type) {
			case *http2.DataFrame:
				if f.StreamID == goodID && f.StreamEnded() {
					goodID += 2
					return nil
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				return fmt.Errorf("stream %d: %v", goodID, f)
			}
		}
	}
	if err := request(); err != nil {
		t.Fatal(err)
	}
	// The baseline: the server with the other connection open and idle (the handler of
	// its request is on its way out: wait for two equal counts in a row).
	baseline := runtime.NumGoroutine()
	waitFor(time.Second, func() bool {
		n := runtime.NumGoroutine()
		stable := n == baseline
		baseline = n
		return stable
	})

	bad := dial()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for id := uint32(1); id < 2*10000; id += 2 {
			if bad.tryHeaders(id, true, get("/slow")...) != nil {
				return
			}
			if id%20 != 1 && bad.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() { // the other connection, until the abusive one got its GOAWAY
		for {
			if err := request(); err != nil {
				served <- err
				return
			}
			select {
			case <-stop:
				served <- nil
				return
			default:
			}
		}
	}()
	ga := bad.goAway()
	close(stop)
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "rapid_reset" {
		t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM rapid_reset", ga.ErrCode, ga.DebugData())
	}
	bad.c.Close()
	<-sent
	if err := <-served; err != nil {
		t.Fatalf("other connection during the flood: %v", err)
	}
	t.Logf("%d streams of the abusive connection reached the handler; %d goroutines before it", slow.Load(), baseline)
	if n := slow.Load(); n >= 1000 {
		t.Fatalf("%d streams of the abusive connection reached the handler", n)
	}
	if k := <-kinds; k != "rapid_reset" {
		t.Fatalf("reported %q", k)
	}
	if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= baseline }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d, %d before the abusive connection\n%s", runtime.NumGoroutine(), baseline,
			buf[:runtime.Stack(buf, true)])
	}
	if err := request(); err != nil {
		t.Fatalf("other connection after the close: %v", err)
	}
}
