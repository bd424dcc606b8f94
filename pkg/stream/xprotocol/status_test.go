package xprotocol_test

import (
	"strings"
	"testing"
	"time"

	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
)

func TestCheckStatus(t *testing.T) {
	for _, c := range []struct {
		codec xproto.Codec
		m     stream.StatusMap
		want  string
	}{
		{bolt.New(bolt.Options{}), stream.BoltStatus, ""},
		{bolt.NewV2(bolt.Options{}), stream.BoltStatus, ""},
		{dubbo.New(dubbo.Options{}), stream.DubboStatus, ""},
		{bolt.New(bolt.Options{}), stream.DubboStatus, "no_route with status"},
		{dubbo.New(dubbo.Options{}), stream.HTTPStatus, "dubbo: the codec answers"},
		{bolt.New(bolt.Options{}), func(c stream.Cause) int {
			if c == stream.CauseUpstreamReset {
				return 1
			}
			return stream.BoltStatus(c)
		}, "upstream_reset"},
	} {
		err := xprotocol.CheckStatus(c.codec, c.m)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckStatus(%s) = %v; want %q", c.codec.Name(), err, c.want)
		}
	}
}

// TestHijackStatusesFollowRegistration: what the engine answers for each cause is the
// status bolt's registration maps the cause to.
func TestHijackStatusesFollowRegistration(t *testing.T) {
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	if v.e.Protocol() != stream.Bolt {
		t.Fatalf("Protocol() = %s", v.e.Protocol())
	}
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	for i, tc := range []struct {
		m     bolt.Message
		cause stream.Cause
	}{
		{bolt.Message{Headers: hdrs("service", "NO_ROUTE")}, stream.CauseNoRoute},
		{bolt.Message{Headers: hdrs("service", "dead")}, stream.CauseNoHealthyUpstream},
		{bolt.Message{Headers: hdrs("service", "short", "delay", "5000")}, stream.CauseTimeout},
		{bolt.Message{Headers: hdrs("service", "close")}, stream.CauseUpstreamReset},
	} {
		tc.m.ID = uint32(i + 1)
		f := roundTrip(t, c, r, tc.m)
		if want := stream.BoltStatus(tc.cause); int(f.Status) != want {
			t.Errorf("%s: status %#x, registration says %#x", tc.cause, f.Status, want)
		}
	}
}

// TestGoAwayDoesNotWait: GoAway tells the clients at once and returns; the pending
// request is still answered, then the connection closes.
func TestGoAwayDoesNotWait(t *testing.T) {
	v, r := startPending(t)
	start := time.Now()
	v.e.GoAway()
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("GoAway waited %v", d)
	}
	expectDrained(t, r)
}

// TestGoAwayGraceServesCrossingRequests: a client with nothing in flight reads the
// go-away only after it sent one more request (the two crossed on the wire). The
// connection stays open for GoAwayGrace, that request is answered, and only then is the
// connection closed, instead of the idle connection being closed under the request.
func TestGoAwayGraceServesCrossingRequests(t *testing.T) {
	const grace = 300 * time.Millisecond
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { c.GoAwayGrace = grace })
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("before the go-away: status %#x", f.Status)
	}
	start := time.Now()
	v.e.GoAway()
	if f, err := r.next(); err != nil || f.Kind != xproto.KindGoAway {
		t.Fatalf("want a go-away: %v %+v", err, f)
	}
	if f := roundTrip(t, c, r, bolt.Message{ID: 2, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("request crossing the go-away: status %#x", f.Status)
	}
	if _, err := r.next(); !isEOF(err) {
		t.Fatalf("want the connection closed after the grace, got %v", err)
	}
	if d := time.Since(start); d < grace {
		t.Fatalf("closed %v after the go-away, grace %v", d, grace)
	}
}

// TestDrainingKeepsItsRoutes: a config change replaced the listener (the engine drains)
// and dropped the router it names. A request crossing the go-away is still routed, by
// the table the engine had when its drain began, rather than answered "no route"; an
// engine that is not draining has no route once its router is gone.
func TestDrainingKeepsItsRoutes(t *testing.T) {
	up := startBoltServer(t)
	var tables *router.Tables
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), func(c *xprotocol.Config) { tables = c.Routers })
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	saved := map[string]*router.Table{}
	tbl, _ := tables.Get("r")
	saved["r"] = tbl
	tables.Replace(nil)
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status == 0 {
		t.Fatal("not draining, router gone: the request was routed")
	}
	tables.Replace(saved)
	v.e.GoAway()
	if f, err := r.next(); err != nil || f.Kind != xproto.KindGoAway {
		t.Fatalf("want a go-away: %v %+v", err, f)
	}
	tables.Replace(nil)
	if f := roundTrip(t, c, r, bolt.Message{ID: 2, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("draining, router gone: status %#x; want the request routed by the table it had", f.Status)
	}
}
