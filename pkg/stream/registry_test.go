package stream

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
)

// fakeServer is a ServerConnection that records what it was built from.
type fakeServer struct {
	proto Protocol
	param string
}

func (s *fakeServer) ServeConn(context.Context, *network.Conn) {}
func (s *fakeServer) Protocol() Protocol                       { return s.proto }
func (s *fakeServer) GoAway()                                  {}
func (s *fakeServer) Close() error                             { return nil }

func fakeFactory(p string, r *Registration[string]) (ServerConnection, error) {
	return &fakeServer{proto: r.Name, param: p}, nil
}

func builtinRegistry(t *testing.T) *Registry[string] {
	t.Helper()
	r := NewRegistry[string]()
	f := fakeFactory
	if err := RegisterBuiltins(r, Servers[string]{HTTP1: f, HTTP2: f, Bolt: f, BoltV2: f, Dubbo: f}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryBuiltins(t *testing.T) {
	r := builtinRegistry(t)
	want := []Protocol{HTTP2, Bolt, BoltV2, Dubbo, HTTP1} // Auto's fixed order
	if got := r.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for i, reg := range r.Registrations() {
		if reg.Name != want[i] {
			t.Fatalf("Registrations()[%d] = %s, want %s", i, reg.Name, want[i])
		}
	}
	for _, c := range []struct {
		p      Protocol
		pool   PoolMode
		status map[Cause]int
	}{
		{HTTP1, PingPong, map[Cause]int{CauseNoRoute: 404, CauseNoHealthyUpstream: 503, CauseOverflow: 503, CauseTimeout: 504, CauseUpstreamReset: 502, CauseCodecError: 400}},
		{HTTP2, Multiplex, map[Cause]int{CauseNoRoute: 404, CauseNoHealthyUpstream: 503, CauseOverflow: 503, CauseTimeout: 504, CauseUpstreamReset: 502, CauseCodecError: 400}},
		{Bolt, Multiplex, map[Cause]int{
			CauseNoRoute: int(bolt.StatusNoProcessor), CauseNoHealthyUpstream: int(bolt.StatusNoProcessor),
			CauseOverflow: int(bolt.StatusServerThreadpoolBusy), CauseTimeout: int(bolt.StatusTimeout),
			CauseUpstreamReset: int(bolt.StatusConnectionClosed), CauseCodecError: int(bolt.StatusCodecException)}},
		{BoltV2, Multiplex, map[Cause]int{CauseNoRoute: int(bolt.StatusNoProcessor), CauseTimeout: int(bolt.StatusTimeout)}},
		{Dubbo, Multiplex, map[Cause]int{
			CauseNoRoute: int(dubbo.StatusServiceNotFound), CauseNoHealthyUpstream: int(dubbo.StatusServiceNotFound),
			CauseOverflow: int(dubbo.StatusThreadpoolExhausted), CauseTimeout: int(dubbo.StatusClientTimeout),
			CauseUpstreamReset: int(dubbo.StatusChannelInactive), CauseCodecError: int(dubbo.StatusServiceError)}},
	} {
		reg, err := r.Lookup(c.p)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", c.p, err)
		}
		if reg.Name != c.p || reg.PoolMode != c.pool {
			t.Errorf("Lookup(%s) = %s, %v; want pool %v", c.p, reg.Name, reg.PoolMode, c.pool)
		}
		for cause, want := range c.status {
			if got := reg.Status(cause); got != want {
				t.Errorf("%s: Status(%s) = %d, want %d", c.p, cause, got, want)
			}
		}
		s, err := reg.Factory("params", reg)
		if err != nil {
			t.Fatal(err)
		}
		if fs := s.(*fakeServer); fs.proto != c.p || fs.param != "params" {
			t.Errorf("%s: Factory built %+v", c.p, fs)
		}
	}
	_, err := r.Lookup("thrift")
	if !errors.Is(err, ErrUnknownProtocol) || !strings.Contains(err.Error(), "Http2, bolt, boltv2, dubbo, Http1") {
		t.Fatalf("Lookup(thrift) = %v; want ErrUnknownProtocol listing the known ones", err)
	}
}

func TestRegisterRefuses(t *testing.T) {
	r := builtinRegistry(t)
	ok := Registration[string]{Name: "thrift", Match: MatchBolt, Factory: fakeFactory, PoolMode: Multiplex, Status: HTTPStatus}
	for _, c := range []struct {
		name string
		edit func(*Registration[string])
		want string
	}{
		{"duplicate", func(g *Registration[string]) { g.Name = Bolt }, "already registered"},
		{"empty name", func(g *Registration[string]) { g.Name = "" }, "not a protocol name"},
		{"auto", func(g *Registration[string]) { g.Name = Auto }, "not a protocol name"},
		{"no matcher", func(g *Registration[string]) { g.Match = nil }, "required"},
		{"no factory", func(g *Registration[string]) { g.Factory = nil }, "required"},
		{"no status", func(g *Registration[string]) { g.Status = nil }, "required"},
		{"no pool mode", func(g *Registration[string]) { g.PoolMode = 0 }, "pool mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := ok
			c.edit(&g)
			if err := r.Register(g); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Register = %v; want %q", err, c.want)
			}
		})
	}
	if got := len(r.Names()); got != 5 {
		t.Fatalf("refused registrations were kept: %v", r.Names())
	}
	if err := r.Register(ok); err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); got[len(got)-1] != "thrift" {
		t.Fatalf("Names() = %v; want thrift last", got)
	}
	// The built-ins are all required.
	err := RegisterBuiltins(NewRegistry[string](), Servers[string]{HTTP1: fakeFactory})
	if err == nil || !strings.Contains(err.Error(), `"bolt"`) {
		t.Fatalf("RegisterBuiltins without factories = %v", err)
	}
}

// TestRegistrySniff runs Sniff's cases through a registry filled by RegisterBuiltins: both
// sniff alike.
func TestRegistrySniff(t *testing.T) {
	r := builtinRegistry(t)
	for _, c := range []struct {
		in      string
		allowed []Protocol
	}{
		{"", nil},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nil},
		{"PRI * HTTP/2.0\r\n", nil},
		{"PRI * HTTP/2.0\r\n", []Protocol{HTTP1}},
		{"PRI * HTTP/1.1\r\n", nil},
		{"GET / HTTP/1.1\r\n", []Protocol{Bolt, Dubbo}},
		{"\x01\x01\x00\x01", []Protocol{HTTP1, Bolt}},
		{"\x02\x01\x01", []Protocol{Bolt}},
		{"\xda", []Protocol{HTTP1}},
		{"\xda", nil},
		{"\xda\xbb\xc2", nil},
		{"\x16\x03\x01", nil},
	} {
		p, more := r.Sniff([]byte(c.in), c.allowed)
		wp, wmore := Sniff([]byte(c.in), c.allowed)
		if p != wp || more != wmore {
			t.Errorf("Registry.Sniff(%q, %v) = %q, %v; Sniff says %q, %v", c.in, c.allowed, p, more, wp, wmore)
		}
	}
}

// TestSniffRegistrationOrder: a registration that needs more bytes holds back later ones;
// the first that matches wins.
func TestSniffRegistrationOrder(t *testing.T) {
	r := NewRegistry[string]()
	// "x" wants 4 bytes of "XXXX"; "any" takes anything starting with 'X'.
	xxxx := func(peek []byte) (bool, bool) {
		n := min(len(peek), 4)
		if string(peek[:n]) != "XXXX"[:n] {
			return false, false
		}
		return n == 4, n < 4
	}
	anyX := func(peek []byte) (bool, bool) { return peek[0] == 'X', false }
	for _, g := range []Registration[string]{
		{Name: "x", Match: xxxx, Factory: fakeFactory, PoolMode: Multiplex, Status: HTTPStatus},
		{Name: "any", Match: anyX, Factory: fakeFactory, PoolMode: PingPong, Status: HTTPStatus},
	} {
		if err := r.Register(g); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		in      string
		allowed []Protocol
		want    Protocol
		more    bool
	}{
		{"XX", nil, "", true},
		{"XXXX", nil, "x", false},
		{"XXY", nil, "any", false},
		{"XX", []Protocol{"any"}, "any", false},
		{"Y", nil, "", false},
	} {
		p, more := r.Sniff([]byte(c.in), c.allowed)
		if p != c.want || more != c.more {
			t.Errorf("Sniff(%q, %v) = %q, %v; want %q, %v", c.in, c.allowed, p, more, c.want, c.more)
		}
	}
}

func TestSniffNoAlloc(t *testing.T) {
	r := builtinRegistry(t)
	peek := []byte("GET / HTTP/1.1\r\n")
	allowed := []Protocol{HTTP2, HTTP1}
	if n := testing.AllocsPerRun(100, func() { _, _ = r.Sniff(peek, allowed) }); n != 0 {
		t.Fatalf("Sniff allocates %v times", n)
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, c := range Causes {
		if HTTPStatus(c) < 400 || c.String() == "" || strings.HasPrefix(c.String(), "Cause(") {
			t.Errorf("cause %d: status %d, name %q", c, HTTPStatus(c), c)
		}
	}
	if HTTPStatus(0) != http.StatusInternalServerError || HTTPStatus(numCauses) != http.StatusInternalServerError {
		t.Fatal("unknown causes must map to 500")
	}
	if PingPong.String() != "ping-pong" || Multiplex.String() != "multiplex" || PoolMode(9).String() != "PoolMode(9)" {
		t.Fatal("PoolMode.String")
	}
}

// BenchmarkSniff: what Auto runs on a connection's first read, HTTP/1 being last in order.
func BenchmarkSniff(b *testing.B) {
	r := NewRegistry[string]()
	f := fakeFactory
	if err := RegisterBuiltins(r, Servers[string]{HTTP1: f, HTTP2: f, Bolt: f, BoltV2: f, Dubbo: f}); err != nil {
		b.Fatal(err)
	}
	peek := []byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if p, _ := r.Sniff(peek, nil); p != HTTP1 {
			b.Fatal(p)
		}
	}
}
