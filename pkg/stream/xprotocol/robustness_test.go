package xprotocol_test

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// The tests of this file check the hostile-input and failure cases of the robustness
// catalogue (ROBUSTNESS.md) that need the engine's internal state (export_test.go) or
// its goroutines: rows 20, 22, 23 and 32, and the ticker leak, stream counter overflow
// and "upstream never answers" regressions.

// waitBound bounds every wait of this file: the conditions hold within milliseconds.
const waitBound = 5 * time.Second

// waitFor polls cond until it reports true, failing the test after waitBound with what
// cond last reported.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s: %s", waitBound, what, state)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Goroutines of the engine, by a function on their stack.
const (
	gServe    = "xprotocol.(*Engine).ServeConn" // a downstream connection's reader
	gWriter   = "xprotocol.(*session).writer"   // its writer
	gUpReader = "xprotocol.(*upConn).readLoop"  // an upstream connection's reader
	gUpTicker = "xprotocol.(*upConn).tickLoop"  // its ticker (timeouts, heartbeats)
)

func counterValue(t testing.TB, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestTruncatedFrameThenClose (row 20, bolt_truncated_frames, at the engine): a client
// sends part of a bolt request, cut inside the fixed header, the header map or the body
// (v1, and v2 without its CRC trailer), then ends its side of the connection (a
// half-close, so that it still sees what the proxy does next). The engine does not
// panic, answers nothing and closes its side (the client reads EOF), its session and the
// session's goroutines are gone, and nothing was dialled or sent upstream: a frame is
// forwarded only once it has been read whole.
func TestTruncatedFrameThenClose(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	content := []byte("0123456789abcdef")
	v1 := boltReq(t, bolt.Message{ID: 1, Class: []byte("req"), Headers: hdrs("service", "echo"), Content: content})
	v2 := boltReq(t, bolt.Message{ID: 2, Version: 2, Ver1: 2, Switch: bolt.SwitchCRC, Class: []byte("req"),
		Headers: hdrs("service", "echo"), Content: content})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"protocol byte only", v1[:1]},
		{"cut before the lengths", v1[:10]},
		{"cut at the last header byte", v1[:bolt.RequestHeaderLen-1]},
		{"header only", v1[:bolt.RequestHeaderLen]},
		{"cut in the header map", v1[:bolt.RequestHeaderLen+len("req")+6]},
		{"cut in the body", v1[:len(v1)-len(content)/2]},
		{"one byte short", v1[:len(v1)-1]},
		{"v2 cut in the header", v2[:bolt.RequestHeaderLenV2-3]},
		{"v2 without its CRC", v2[:len(v2)-4]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, v.addr)
			if _, err := c.Write(tc.b); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(waitBound))
			got, err := io.ReadAll(c)
			if err != nil || len(got) != 0 {
				t.Fatalf("read %q, %v: want the proxy to close its side without answering", got, err)
			}
			waitFor(t, "the session and its goroutines to end", func() (bool, string) {
				s, r, w := v.e.Sessions(), testutil.Goroutines(gServe), testutil.Goroutines(gWriter)
				return s == 0 && r == 0 && w == 0, fmt.Sprintf("sessions %d, readers %d, writers %d", s, r, w)
			})
		})
	}
	if up.conns.Load() != 0 || up.reqs.Load() != 0 {
		t.Fatalf("upstream: %d connections, %d requests; want none", up.conns.Load(), up.reqs.Load())
	}
	if n := counterValue(t, v.m.RPCRequests.WithLabelValues("l", "bolt")); n != 0 {
		t.Fatalf("rpc_requests_total %v: a partial frame was counted as a request", n)
	}
}

// TestDuplicateRequestIDInFlight (row 22, bolt_bad_fields: duplicate requestId in
// flight): a client sends a second request with the id of one still pending. The engine
// forwards both, each under its own upstream id, and keeps the client's id in each pending
// entry, so both are answered, once each, with the client's id and each with its own
// request's content: the second never takes over (or is answered with) the first's entry.
// Bookkeeping returns to zero and the connection goes on serving.
func TestDuplicateRequestIDInFlight(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	_ = c.SetDeadline(time.Now().Add(waitBound))
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	// "first" is held by the upstream until "second" was answered: the answers come back
	// in the other order.
	all := append(boltReq(t, bolt.Message{ID: 7, Content: []byte("first"), Headers: hdrs("service", "gated")}),
		boltReq(t, bolt.Message{ID: 7, Content: []byte("second"), Headers: hdrs("service", "echo")})...)
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	upIDs := map[string]string{} // content -> upstream id
	for i := range 2 {
		f, err := r.next()
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		content := string(bolt.MessageOf(f).Content)
		if f.Kind != xproto.KindResponse || f.ID != 7 || f.Status != bolt.StatusSuccess {
			t.Fatalf("answer %d: kind %d id %d status %#x", i+1, f.Kind, f.ID, f.Status)
		}
		if want := []string{"second", "first"}[i]; content != want {
			t.Fatalf("answer %d carries %q, want %q", i+1, content, want)
		}
		uid, _ := f.Header("up-id")
		upIDs[content] = string(uid)
		if i == 0 {
			up.release()
		}
	}
	if upIDs["first"] == upIDs["second"] {
		t.Fatalf("both requests went upstream with id %s", upIDs["first"])
	}
	waitFor(t, "the requests' bookkeeping to be released", func() (bool, string) {
		st, n := v.e.UpstreamStats(), v.e.InFlight()
		return st.Pending == 0 && n == 0, fmt.Sprintf("pending upstream %d, in flight %d", st.Pending, n)
	})
	if f := roundTrip(t, c, r, bolt.Message{ID: 8, Content: []byte("third"), Headers: hdrs("service", "echo")}); string(bolt.MessageOf(f).Content) != "third" {
		t.Fatalf("next request answered with %q", bolt.MessageOf(f).Content)
	}
}

// TestDubboDuplicateRequestIDInFlight (row 23, dubbo_bad_magic_and_flags: request id
// reuse): two dubbo requests with one id in flight are both forwarded and both answered,
// once each, with that id and with the answer to their own method.
func TestDubboDuplicateRequestIDInFlight(t *testing.T) {
	up := startDubboServer(t)
	v := startEnv(t, dubbo.New(dubbo.Options{}), up.Addr(), nil)
	c := dial(t, v.addr)
	_ = c.SetDeadline(time.Now().Add(waitBound))
	r := newFrameReader(c, dubbo.New(dubbo.Options{}))
	const id = 1<<40 + 7
	all := append(dubboReq(t, dubbo.Request{ID: id, Service: "echo.svc", Method: "first"}),
		dubboReq(t, dubbo.Request{ID: id, Service: "echo.svc", Method: "second"})...)
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i := range 2 {
		f, err := r.next()
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if f.Kind != xproto.KindResponse || f.ID != id || f.Status != dubbo.StatusOK {
			t.Fatalf("answer %d: kind %d id %#x status %d", i+1, f.Kind, f.ID, f.Status)
		}
		for _, m := range []string{"first", "second"} {
			if bytes.Contains(f.Raw, []byte("ok:"+m)) {
				got[m]++
			}
		}
	}
	if got["first"] != 1 || got["second"] != 1 {
		t.Fatalf("answers by method %v, want one each", got)
	}
	if up.reqs.Load() != 2 {
		t.Fatalf("upstream requests %d, want 2", up.reqs.Load())
	}
	waitFor(t, "the requests' bookkeeping to be released", func() (bool, string) {
		st, n := v.e.UpstreamStats(), v.e.InFlight()
		return st.Pending == 0 && n == 0, fmt.Sprintf("pending upstream %d, in flight %d", st.Pending, n)
	})
}

// TestDubboBadMagicClosesConnection (row 23, dubbo_bad_magic_and_flags: wrong magic,
// through the engine): a frame with a wrong first or second magic byte, as a
// connection's first bytes or after a request it served, closes that connection without
// an answer, is logged and counted (rpc_failures_total{cause="protocol_error"},
// protocol_errors_total), and is never forwarded; another client's connection and the
// shared upstream connection keep serving.
func TestDubboBadMagicClosesConnection(t *testing.T) {
	up := startDubboServer(t)
	core, logs := observer.New(zap.InfoLevel)
	v := startEnv(t, dubbo.New(dubbo.Options{}), up.Addr(), func(c *xprotocol.Config) { c.Log = zap.New(core) })
	other := dial(t, v.addr)
	_ = other.SetDeadline(time.Now().Add(waitBound))
	or := newFrameReader(other, dubbo.New(dubbo.Options{}))
	nextID := uint64(100)
	ask := func(t *testing.T, c net.Conn, r *frameReader) {
		t.Helper()
		nextID++
		f := dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: nextID, Service: "echo.svc", Method: "m"}), nextID)
		if f.Status != dubbo.StatusOK {
			t.Fatalf("request %d: status %d", nextID, f.Status)
		}
	}
	ask(t, other, or)
	good := dubboReq(t, dubbo.Request{ID: 1, Service: "echo.svc", Method: "m"})
	badFirst, badSecond := bytes.Clone(good), bytes.Clone(good)
	badFirst[0] = 0xdb
	badSecond[1] = 0xbc
	for i, tc := range []struct {
		name   string
		served bool // a good request first
		bad    []byte
	}{
		{"first byte, first frame", false, badFirst},
		{"second byte, first frame", false, badSecond},
		{"first byte, after a request", true, badFirst},
		{"second byte, after a request", true, badSecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, v.addr)
			_ = c.SetDeadline(time.Now().Add(waitBound))
			r := newFrameReader(c, dubbo.New(dubbo.Options{}))
			if tc.served {
				ask(t, c, r)
			}
			sent := up.reqs.Load()
			if _, err := c.Write(tc.bad); err != nil {
				t.Fatal(err)
			}
			if f, err := r.next(); !isEOF(err) {
				t.Fatalf("got %+v, %v: want the connection closed", f, err)
			}
			if n := v.failuresOf("dubbo", "protocol_error"); n != float64(i+1) {
				t.Fatalf("rpc_failures_total{cause=protocol_error} %v, want %d", n, i+1)
			}
			if n := counterValue(t, v.m.ProtocolErrors.WithLabelValues("l", "dubbo")); n != float64(i+1) {
				t.Fatalf("protocol_errors_total %v, want %d", n, i+1)
			}
			lines := logs.FilterMessage("xprotocol: bad frame from downstream, closing connection").All()
			if len(lines) != i+1 || !strings.Contains(fmt.Sprint(lines[i].ContextMap()["error"]), dubbo.ErrBadMagic.Error()) {
				t.Fatalf("log lines %+v", lines)
			}
			if up.reqs.Load() != sent {
				t.Fatal("the bad frame reached the upstream")
			}
			ask(t, other, or)
		})
	}
	fresh := dial(t, v.addr)
	ask(t, fresh, newFrameReader(fresh, dubbo.New(dubbo.Options{}))) // a new connection is served too
	if up.Conns.Load() != 1 {
		t.Fatalf("upstream connections %d, want the one shared connection", up.Conns.Load())
	}
}

// TestUpstreamNeverAnswersReleasesPending (row 32, upstream_hang, and the "memory leak
// when the upstream never answers" regression): requests to an upstream that accepts them
// and never answers are answered with the timeout status at their own deadline, and then
// nothing of them is left: no pending entry on the upstream connection, no id in its
// deadline wheel, no in-flight count on the client's connection, the cluster's
// max_requests slot and the host's active-request count released. The upstream
// connection itself stays (a timeout is not a connection failure).
func TestUpstreamNeverAnswersReleasesPending(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	cl, _ := v.clusters.Get("c")
	host := cl.Hosts()[0]
	c := dial(t, v.addr)
	_ = c.SetDeadline(time.Now().Add(waitBound))
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	// A first request opens the upstream connection. Its short timeout lets its id leave
	// the deadline wheel soon (an answered request's id stays there until its slot comes
	// round). Once it is answered the host's active-request count is 0: the open
	// connection holds no pick of its own (the dial starts at the request's host).
	if f := roundTrip(t, c, r, bolt.Message{ID: 100, Timeout: 50, Headers: hdrs("service", "echo")}); f.Status != bolt.StatusSuccess {
		t.Fatalf("status %#x", f.Status)
	}
	waitFor(t, "the first request's bookkeeping to be released", func() (bool, string) {
		st, active := v.e.UpstreamStats(), host.Stats().Active()
		return st.Pending == 0 && st.Wheel == 0 && v.e.InFlight() == 0 && active == 0,
			fmt.Sprintf("%+v, host active %d", st, active)
	})
	const n = 50
	var all []byte
	for i := 1; i <= n; i++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(i), Timeout: 100 + int32(i), Headers: hdrs("service", "hang")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < n {
		f, err := r.next()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(seen), err)
		}
		if f.Status != bolt.StatusTimeout || f.ID < 1 || f.ID > n || seen[f.ID] {
			t.Fatalf("id %d status %#x", f.ID, f.Status)
		}
		seen[f.ID] = true
	}
	if up.reqs.Load() != n+1 {
		t.Fatalf("upstream requests %d, want %d", up.reqs.Load(), n+1)
	}
	waitFor(t, "the timed-out requests' bookkeeping to be released", func() (bool, string) {
		st, inflight := v.e.UpstreamStats(), v.e.InFlight()
		inUse, _ := cl.Usage(cluster.MaxRequests)
		active := host.Stats().Active()
		return st.Pending == 0 && st.Wheel == 0 && inflight == 0 && inUse == 0 && active == 0,
			fmt.Sprintf("pending %d, wheel ids %d, in flight %d, max_requests in use %d, host active %+d",
				st.Pending, st.Wheel, inflight, inUse, active)
	})
	if st := v.e.UpstreamStats(); st.Conns != 1 || st.Pooled != 1 || up.conns.Load() != 1 {
		t.Fatalf("upstream connections: %+v, accepted %d; want the one connection kept", st, up.conns.Load())
	}
	if got := v.failures("timeout"); got != n {
		t.Fatalf("rpc_failures_total{cause=timeout} %v, want %d", got, n)
	}
}

// TestUpstreamIDWrap (the "stream counter overflow" regression): bolt request ids are 32
// bits, and an upstream connection's counter wraps. With the counter set just below
// 2^32-1 while the upstream holds a request under id 1, the next requests go upstream as
// 2^32-2 and 2^32-1, then, after the wrap, as 2, 3, ... : 0 is never used and 1, still in
// flight, is not reused. Every request, the held one included, is answered once with its
// own content and the client's id, on the same upstream connection.
func TestUpstreamIDWrap(t *testing.T) {
	up := startBoltServer(t)
	// No heartbeats: they take ids from the same counter.
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { c.HeartbeatInterval = -1 })
	c := dial(t, v.addr)
	_ = c.SetDeadline(time.Now().Add(waitBound))
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 1, Content: []byte("held"), Headers: hdrs("service", "gated")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitBound, "the held request upstream", func() bool { return up.reqs.Load() == 1 })
	if n := v.e.SetNextUpstreamID(math.MaxUint32 - 2); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
	want := map[uint64]uint64{ // client id -> upstream id
		2: math.MaxUint32 - 1, 3: math.MaxUint32, 4: 2, 5: 3, 6: 4, 7: 5,
	}
	var all []byte
	for id := uint64(2); id <= 7; id++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(id), Content: []byte("body-" + strconv.FormatUint(id, 10)),
			Headers: hdrs("service", "echo")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	check := func(f *xproto.Frame, content string) {
		t.Helper()
		m := bolt.MessageOf(f)
		uid, _ := f.Header("up-id")
		if f.Status != bolt.StatusSuccess || string(m.Content) != content ||
			string(uid) != strconv.FormatUint(want[f.ID], 10) {
			t.Fatalf("client id %d: status %#x, content %q, upstream id %s (want %d)", f.ID, f.Status, m.Content, uid, want[f.ID])
		}
		delete(want, f.ID)
	}
	for range 6 {
		f, err := r.next()
		if err != nil {
			t.Fatalf("%v; unanswered %v", err, want)
		}
		if f.ID == 1 {
			t.Fatal("the held request was answered before its release")
		}
		check(f, "body-"+strconv.FormatUint(f.ID, 10))
	}
	up.release()
	want[1] = 1
	f, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 1 {
		t.Fatalf("answer to client id %d, want the held request's 1", f.ID)
	}
	check(f, "held")
	if st := v.e.UpstreamStats(); st.Conns != 1 || up.conns.Load() != 1 {
		t.Fatalf("upstream connections %+v, accepted %d; want the one connection", st, up.conns.Load())
	}
}

// TestUpstreamConnGoroutinesEnd (the "ticker leak" regression): each upstream connection
// has a reader and a ticker goroutine. When the connection closes while the engine keeps
// running (the upstream closes it; the proxy closes it after the upstream's go-away once
// nothing is pending; the ticker itself closes it when heartbeats go unanswered), both end
// with it and the connection leaves the engine's maps, instead of lingering until the
// engine's Close (where the package's goleak check could not tell). The next request
// dials a new connection.
func TestUpstreamConnGoroutinesEnd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		heartbeat time.Duration
		close     func(t *testing.T, up *boltServer, c net.Conn, r *frameReader)
	}{
		{"upstream closes", -1, func(_ *testing.T, up *boltServer, _ net.Conn, _ *frameReader) { up.closeConns() }},
		{"upstream go-away", -1, func(t *testing.T, _ *boltServer, c net.Conn, r *frameReader) {
			if f := roundTrip(t, c, r, bolt.Message{ID: 2, Headers: hdrs("service", "goaway")}); f.Status != bolt.StatusSuccess {
				t.Fatalf("go-away request: status %#x", f.Status)
			}
		}},
		{"heartbeats unanswered", 30 * time.Millisecond, func(_ *testing.T, up *boltServer, _ net.Conn, _ *frameReader) {
			up.noHeartbeat.Store(true)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startBoltServer(t)
			v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { c.HeartbeatInterval = tc.heartbeat })
			c := dial(t, v.addr)
			_ = c.SetDeadline(time.Now().Add(waitBound))
			r := newFrameReader(c, bolt.New(bolt.Options{}))
			if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status != bolt.StatusSuccess {
				t.Fatalf("status %#x", f.Status)
			}
			if rd, tk := testutil.Goroutines(gUpReader), testutil.Goroutines(gUpTicker); rd != 1 || tk != 1 {
				t.Fatalf("one upstream connection: %d readers, %d tickers", rd, tk)
			}
			tc.close(t, up, c, r)
			waitFor(t, "the closed connection's goroutines to end", func() (bool, string) {
				rd, tk, st := testutil.Goroutines(gUpReader), testutil.Goroutines(gUpTicker), v.e.UpstreamStats()
				return rd == 0 && tk == 0 && st.Conns == 0 && st.Pooled == 0,
					fmt.Sprintf("readers %d, tickers %d, %+v", rd, tk, st)
			})
			up.noHeartbeat.Store(false) // the next connection stays
			if f := roundTrip(t, c, r, bolt.Message{ID: 3, Headers: hdrs("service", "echo")}); f.Status != bolt.StatusSuccess {
				t.Fatalf("after the close: status %#x", f.Status)
			}
			if up.conns.Load() != 2 || testutil.Goroutines(gUpReader) != 1 || testutil.Goroutines(gUpTicker) != 1 {
				t.Fatalf("after the close: %d upstream connections accepted, %d readers, %d tickers",
					up.conns.Load(), testutil.Goroutines(gUpReader), testutil.Goroutines(gUpTicker))
			}
		})
	}
}
