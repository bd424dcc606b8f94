package xprotocol_test

import (
	"bytes"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestManyInFlightMixedVersions sends 300 requests on one connection without waiting,
// v1 and v2 mixed (v2 with and without CRC), answered out of order by the upstream: every
// response comes back once, with its own id, version and content, over one upstream
// connection that carried the proxy's own ids.
func TestManyInFlightMixedVersions(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	const n = 300
	var all []byte
	for i := 1; i <= n; i++ {
		m := bolt.Message{ID: uint32(1000 + i), Version: byte(1 + i%2), Content: []byte("body-" + strconv.Itoa(i)),
			Headers: hdrs("service", "echo.svc", "delay", strconv.Itoa(i%7))}
		if i%4 == 1 {
			m.Ver1, m.Switch = 2, bolt.SwitchCRC
		}
		all = append(all, boltReq(t, m)...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	seen := map[uint64]bool{}
	upIDs := map[string]bool{}
	for len(seen) < n {
		f, err := r.next()
		if err != nil {
			t.Fatalf("after %d responses: %v", len(seen), err)
		}
		if f.Kind != xproto.KindResponse || f.Status != bolt.StatusSuccess {
			t.Fatalf("frame %+v", f)
		}
		i := int(f.ID) - 1000
		if i < 1 || i > n || seen[f.ID] {
			t.Fatalf("unexpected or duplicate id %d", f.ID)
		}
		seen[f.ID] = true
		m := bolt.MessageOf(f)
		if string(m.Content) != "body-"+strconv.Itoa(i) || f.Version != byte(1+i%2) {
			t.Fatalf("id %d: content %q version %d", f.ID, m.Content, f.Version)
		}
		if i%4 == 1 && (m.Ver1 != 2 || m.Switch != bolt.SwitchCRC) {
			t.Fatalf("id %d: CRC frame answered with ver1 %d switch %d", f.ID, m.Ver1, m.Switch)
		}
		uid, _ := f.Header("up-id")
		upIDs[string(uid)] = true
	}
	if len(upIDs) != n {
		t.Fatalf("upstream ids: %d distinct for %d requests", len(upIDs), n)
	}
	if got := up.conns.Load(); got != 1 {
		t.Fatalf("upstream connections: %d, want 1", got)
	}
}

// TestHeartbeatAnsweredLocally: v1 and v2 heartbeats are answered by the proxy with the
// same id and never reach the upstream.
func TestHeartbeatAnsweredLocally(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	xp := bolt.New(bolt.Options{})
	r := newFrameReader(c, xp)
	for _, ver := range []byte{1, 2} {
		if _, err := c.Write(boltReq(t, bolt.Message{Kind: xproto.KindHeartbeat, Version: ver, ID: 77})); err != nil {
			t.Fatal(err)
		}
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind != xproto.KindHeartbeatReply || f.ID != 77 || f.Version != ver {
			t.Fatalf("v%d heartbeat answered with %+v", ver, f)
		}
	}
	if up.heartbeats.Load() != 0 || up.conns.Load() != 0 {
		t.Fatalf("heartbeat reached the upstream")
	}
}

// roundTrip sends one request and reads one frame.
func roundTrip(t *testing.T, c interface {
	Write([]byte) (int, error)
}, r *frameReader, m bolt.Message) *xproto.Frame {
	t.Helper()
	if _, err := c.Write(boltReq(t, m)); err != nil {
		t.Fatal(err)
	}
	f, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != uint64(m.ID) {
		t.Fatalf("response id %d, want %d", f.ID, m.ID)
	}
	return f
}

// TestFailureStatuses: the proxy's own answers carry bolt's status for each cause and the
// connection keeps serving.
func TestFailureStatuses(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	for i, tc := range []struct {
		service string
		status  uint16
		cause   string
	}{
		{"NO_ROUTE", bolt.StatusNoProcessor, "no_route"},
		{"nope", bolt.StatusNoProcessor, "no_route"}, // direct_response has no RPC form
		{"dead", bolt.StatusNoProcessor, "no_healthy_upstream"},
		{"short", bolt.StatusSuccess, ""},
	} {
		f := roundTrip(t, c, r, bolt.Message{ID: uint32(i + 1), Headers: hdrs("service", tc.service)})
		if f.Kind != xproto.KindResponse || f.Status != tc.status {
			t.Fatalf("%s: kind %d status %#x, want %#x", tc.service, f.Kind, f.Status, tc.status)
		}
		if tc.cause != "" && v.failures(tc.cause) == 0 {
			t.Fatalf("%s: rpc_failures_total{cause=%q} not counted", tc.service, tc.cause)
		}
	}
	// Timeout: the route's 200ms applies (the request asks for 1 minute).
	start := time.Now()
	f := roundTrip(t, c, r, bolt.Message{ID: 50, Timeout: 60000, Headers: hdrs("service", "short", "delay", "5000")})
	if f.Status != bolt.StatusTimeout || time.Since(start) > 5*time.Second {
		t.Fatalf("timeout: status %#x after %v", f.Status, time.Since(start))
	}
	// The request's own shorter timeout applies too.
	f = roundTrip(t, c, r, bolt.Message{ID: 51, Timeout: 100, Headers: hdrs("service", "hang")})
	if f.Status != bolt.StatusTimeout {
		t.Fatalf("own timeout: status %#x", f.Status)
	}
	// One-way: forwarded, no answer; the next request is answered normally.
	if _, err := c.Write(boltReq(t, bolt.Message{Kind: xproto.KindOneway, ID: 60, Headers: hdrs("service", "echo")})); err != nil {
		t.Fatal(err)
	}
	f = roundTrip(t, c, r, bolt.Message{ID: 61, Headers: hdrs("service", "echo")})
	if f.Status != bolt.StatusSuccess {
		t.Fatalf("after one-way: %#x", f.Status)
	}
	if v.failures("timeout") != 2 {
		t.Fatalf("timeouts counted: %v", v.failures("timeout"))
	}
}

// TestUpstreamClosedMidRequest: every pending request is answered with ConnectionClosed
// when the upstream connection dies; a new connection serves the next request.
func TestUpstreamClosedMidRequest(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	var all []byte
	for i := 1; i <= 20; i++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(i), Timeout: 60000, Headers: hdrs("service", "hang")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "upstream to see the requests", func() bool { return up.reqs.Load() == 20 })
	up.closeConns()
	seen := map[uint64]bool{}
	for len(seen) < 20 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != bolt.StatusConnectionClosed || seen[f.ID] {
			t.Fatalf("id %d status %#x", f.ID, f.Status)
		}
		seen[f.ID] = true
	}
	f := roundTrip(t, c, r, bolt.Message{ID: 99, Headers: hdrs("service", "echo")})
	if f.Status != bolt.StatusSuccess || up.conns.Load() != 2 {
		t.Fatalf("after reconnect: status %#x, upstream conns %d", f.Status, up.conns.Load())
	}
	// "close" makes the upstream close while the request is pending.
	f = roundTrip(t, c, r, bolt.Message{ID: 100, Headers: hdrs("service", "close")})
	if f.Status != bolt.StatusConnectionClosed {
		t.Fatalf("close: %#x", f.Status)
	}
}

// TestUpstreamCutMidResponseFrame: an upstream that sends half of a response frame and
// then closes its connection: that request and the others pending on the connection are
// answered with the connection-closed status (never with a truncated frame), and the next
// request goes out on a new connection (ROBUSTNESS 31).
func TestUpstreamCutMidResponseFrame(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	var all []byte
	for i := 1; i <= 5; i++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(i), Timeout: 60000, Headers: hdrs("service", "hang")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "upstream to see the requests", func() bool { return up.reqs.Load() == 5 })
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 6, Timeout: 60000, Headers: hdrs("service", "halfresp")})); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < 6 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != bolt.StatusConnectionClosed || seen[f.ID] || f.ID < 1 || f.ID > 6 {
			t.Fatalf("id %d status %#x", f.ID, f.Status)
		}
		seen[f.ID] = true
	}
	f := roundTrip(t, c, r, bolt.Message{ID: 7, Headers: hdrs("service", "echo"), Content: []byte("x")})
	if m := bolt.MessageOf(f); f.Status != bolt.StatusSuccess || string(m.Content) != "x" || up.conns.Load() != 2 {
		t.Fatalf("after the cut: status %#x %q, upstream conns %d", f.Status, m.Content, up.conns.Load())
	}
}

// TestFrameTooLarge: a header declaring more than the codec's limit closes the connection
// before the body arrives, and is counted.
func TestFrameTooLarge(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{MaxFrameSize: 1 << 20}), up.addr(), nil)
	c := dial(t, v.addr)
	req := boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "echo")})
	req[18], req[19], req[20], req[21] = 0x01, 0, 0, 0 // contentLen 16 MiB
	if _, err := c.Write(req[:22]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); !isEOF(err) {
		t.Fatalf("read %d bytes, err %v: want the connection closed", n, err)
	}
	testutil.Eventually(t, testTimeout, "metric", func() bool {
		return testutilCount(v, "frame_too_large") == 1
	})
}

func testutilCount(v *env, cause string) float64 { return v.failures(cause) }

// TestInFlightLimit: above MaxInFlight pending requests on one connection, requests are
// answered with ServerThreadpoolBusy at once.
func TestInFlightLimit(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { c.MaxInFlight = 2 })
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	var all []byte
	for i := 1; i <= 3; i++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(i), Headers: hdrs("service", "echo", "delay", "300")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	f, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 3 || f.Status != bolt.StatusServerThreadpoolBusy {
		t.Fatalf("first answer: id %d status %#x, want 3 busy", f.ID, f.Status)
	}
	for range 2 {
		if f, err = r.next(); err != nil || f.Status != bolt.StatusSuccess {
			t.Fatalf("%v %+v", err, f)
		}
	}
}

// TestCircuitBreakerOverflow: the cluster's max_requests 1 answers the second concurrent
// request with ServerThreadpoolBusy.
func TestCircuitBreakerOverflow(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	all := append(boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "tiny", "delay", "200")}),
		boltReq(t, bolt.Message{ID: 2, Headers: hdrs("service", "tiny")})...)
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]uint16{}
	for range 2 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		got[f.ID] = f.Status
	}
	if got[1] != bolt.StatusSuccess || got[2] != bolt.StatusServerThreadpoolBusy {
		t.Fatalf("statuses %v", got)
	}
	if v.failures("overflow") != 1 {
		t.Fatal("overflow not counted")
	}
}

// TestUpstreamGoAway: after a go-away the connection takes no new requests (a new one is
// dialled) and its pending request still completes.
func TestUpstreamGoAway(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	// The slow request is pending when the go-away arrives.
	all := append(boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "echo", "delay", "300")}),
		boltReq(t, bolt.Message{ID: 2, Headers: hdrs("service", "goaway")})...)
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]uint16{}
	for range 2 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		got[f.ID] = f.Status
	}
	if got[1] != 0 || got[2] != 0 {
		t.Fatalf("statuses %v", got)
	}
	f := roundTrip(t, c, r, bolt.Message{ID: 3, Headers: hdrs("service", "echo")})
	if f.Status != 0 || up.conns.Load() != 2 {
		t.Fatalf("after go-away: %#x, upstream conns %d (want a new one)", f.Status, up.conns.Load())
	}
}

// TestUpstreamHeartbeat: an idle upstream connection gets heartbeats; when they stay
// unanswered it is closed and its pending request answered.
func TestUpstreamHeartbeat(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) {
		c.HeartbeatInterval = 60 * time.Millisecond
	})
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("%#x", f.Status)
	}
	testutil.Eventually(t, testTimeout, "heartbeats", func() bool { return up.heartbeats.Load() >= 3 })
	if up.conns.Load() != 1 {
		t.Fatalf("answered heartbeats: connection replaced (%d conns)", up.conns.Load())
	}
	up.noHeartbeat.Store(true)
	start := time.Now()
	f := roundTrip(t, c, r, bolt.Message{ID: 2, Timeout: 60000, Headers: hdrs("service", "hang")})
	if f.Status != bolt.StatusConnectionClosed {
		t.Fatalf("status %#x after %v", f.Status, time.Since(start))
	}
}

// TestDownstreamCloseWithPending: a client leaving with requests pending does not leak:
// the upstream answers later and nothing is written anywhere (goleak checks goroutines).
func TestDownstreamCloseWithPending(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "echo", "delay", "100")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "request upstream", func() bool { return up.reqs.Load() == 1 })
	_ = c.Close()
	c2 := dial(t, v.addr)
	r := newFrameReader(c2, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c2, r, bolt.Message{ID: 5, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("%#x", f.Status)
	}
}

// TestBadFrameClosesConnection: an unknown protocol byte mid-stream closes the connection.
func TestBadFrameClosesConnection(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("%#x", f.Status)
	}
	if _, err := c.Write(bytes.Repeat([]byte{0x07}, 30)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.next(); !isEOF(err) {
		t.Fatalf("want the connection closed, got %v", err)
	}
	if v.failures("protocol_error") != 1 {
		t.Fatal(fmt.Sprint("protocol_error not counted: ", v.failures("protocol_error")))
	}
}

// TestSlowClientDoesNotStallOthers: a client that never reads its answers is disconnected
// once BufferLimit bytes of them are queued, while another client sharing the upstream
// connection keeps getting its answers.
func TestSlowClientDoesNotStallOthers(t *testing.T) {
	up := startBoltServer(t)
	// Small limits: the non-reading client's answers pile up past the hard limit before
	// the paused reader stops taking its requests.
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) {
		c.WriteLimit, c.HardWriteLimit = 64<<10, 256<<10
	})
	slow := dial(t, v.addr)
	_ = slow.(interface{ SetReadBuffer(int) error }).SetReadBuffer(4096)
	big := boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "echo"), Content: make([]byte, 64<<10)})
	errc := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 400 && err == nil; i++ {
			_, err = slow.Write(big)
		}
		errc <- err
	}()
	testutil.Eventually(t, testTimeout, "the slow client to be disconnected", func() bool {
		return v.failures("downstream_write_overflow") >= 1
	})
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	for i := uint32(1); i <= 5; i++ {
		if f := roundTrip(t, c, r, bolt.Message{ID: i, Headers: hdrs("service", "echo")}); f.Status != 0 {
			t.Fatalf("%#x", f.Status)
		}
	}
	_ = slow.Close()
	select {
	case <-errc:
	case <-time.After(testTimeout):
		t.Fatal("writer did not finish")
	}
	if up.conns.Load() != 1 {
		t.Fatalf("upstream connections %d, want 1 shared", up.conns.Load())
	}
}

// TestConnPoolSize: a cluster's conn_pool_size 3 spreads requests over three
// multiplexed connections to the host, and no more.
func TestConnPoolSize(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	for i := uint32(1); i <= 30; i++ {
		if f := roundTrip(t, c, r, bolt.Message{ID: i, Headers: hdrs("service", "pooled")}); f.Status != 0 {
			t.Fatalf("%#x", f.Status)
		}
	}
	if got := up.conns.Load(); got != 3 {
		t.Fatalf("upstream connections %d, want 3", got)
	}
}

// TestCloseDrains: Close sends the client a go-away, lets its pending request finish,
// then closes the connection and the upstream connections.
func TestCloseDrains(t *testing.T) {
	v, r := startPending(t)
	closed := make(chan struct{})
	go func() { _ = v.e.Close(); close(closed) }()
	expectDrained(t, r)
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
}

// TestNoHostFailsFastAfterFirst: with no host in a cluster the first request waits the
// pick timeout (3s), the ones behind it on the same connection are answered at once
// instead of 3s each (which would exceed the test's 10s connection deadline).
func TestNoHostFailsFastAfterFirst(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	var all []byte
	for i := 1; i <= 6; i++ {
		all = append(all, boltReq(t, bolt.Message{ID: uint32(i), Timeout: 60000, Headers: hdrs("service", "empty")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != bolt.StatusNoProcessor {
			t.Fatalf("id %d: status %#x", f.ID, f.Status)
		}
	}
}

// TestLargeFrameFitsDefaultBuffer: a 3 MiB request, above the connection's default 1 MiB
// buffer limit but within bolt's 16 MiB frame limit, passes through both ways intact.
func TestLargeFrameFitsDefaultBuffer(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	body := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 7, Content: body, Headers: hdrs("service", "echo")})); err != nil {
		t.Fatal(err)
	}
	f, err := newFrameReader(c, bolt.New(bolt.Options{})).next()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 7 || f.Status != bolt.StatusSuccess || !bytes.Equal(bolt.MessageOf(f).Content, body) {
		t.Fatalf("id %d status %#x, %d content bytes", f.ID, f.Status, len(bolt.MessageOf(f).Content))
	}
}

// TestOverloadedAnswersBusy: while Overloaded reports true, requests are answered with
// the codec's server-busy status and do not reach the upstream; the same connection is
// served again once it reports false.
func TestOverloadedAnswersBusy(t *testing.T) {
	up := startBoltServer(t)
	var over atomic.Bool
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { c.Overloaded = over.Load })
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	ask := func(id uint32) uint16 {
		t.Helper()
		if _, err := c.Write(boltReq(t, bolt.Message{ID: id, Headers: hdrs("service", "echo")})); err != nil {
			t.Fatal(err)
		}
		f, err := r.next()
		if err != nil || f.ID != uint64(id) {
			t.Fatalf("answer to %d: %v %+v", id, err, f)
		}
		return f.Status
	}
	if st := ask(1); st != bolt.StatusSuccess {
		t.Fatalf("before overload: status %#x", st)
	}
	over.Store(true)
	if st := ask(2); st != bolt.StatusServerThreadpoolBusy {
		t.Fatalf("overloaded: status %#x, want busy %#x", st, bolt.StatusServerThreadpoolBusy)
	}
	over.Store(false)
	if st := ask(3); st != bolt.StatusSuccess {
		t.Fatalf("after overload: status %#x", st)
	}
}
