package tcpproxy

import (
	"net/netip"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		match   []uint16
		nomatch []uint16
		bad     bool
	}{
		{in: "", match: []uint16{1, 65535}},
		{in: "80", match: []uint16{80}, nomatch: []uint16{81}},
		{in: "80-90, 443", match: []uint16{80, 85, 90, 443}, nomatch: []uint16{79, 91, 444}},
		{in: "90-80", bad: true},
		{in: "x", bad: true},
		{in: "70000", bad: true},
	} {
		p, err := parsePorts(tc.in)
		if (err != nil) != tc.bad {
			t.Fatalf("parsePorts(%q) err = %v; bad = %v", tc.in, err, tc.bad)
		}
		for _, m := range tc.match {
			if !p.match(m) {
				t.Errorf("%q should match %d", tc.in, m)
			}
		}
		for _, m := range tc.nomatch {
			if p.match(m) {
				t.Errorf("%q should not match %d", tc.in, m)
			}
		}
	}
}

func TestBuildRouteCIDR(t *testing.T) {
	r, err := buildRoute(config.TCPRouteCfg{
		Cluster:          "c",
		SourceAddrs:      []config.CIDRCfg{{Address: "10.0.0.0", Length: 8}},
		DestinationAddrs: []config.CIDRCfg{{Address: "192.168.1.7"}},
		DestinationPort:  "8080",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !matchAddr(r.src, netip.MustParseAddr("10.2.3.4")) || matchAddr(r.src, netip.MustParseAddr("11.0.0.1")) {
		t.Error("source /8 mismatch")
	}
	if !matchAddr(r.dst, netip.MustParseAddr("192.168.1.7")) || matchAddr(r.dst, netip.MustParseAddr("192.168.1.8")) {
		t.Error("a destination without length must match that single address")
	}
	if _, err := buildRoute(config.TCPRouteCfg{Cluster: "c", SourceAddrs: []config.CIDRCfg{{Address: "nope"}}}); err == nil {
		t.Error("bad address accepted")
	}
	if _, err := buildRoute(config.TCPRouteCfg{}); err == nil {
		t.Error("route without cluster accepted")
	}
}

func TestHashAddrStableAndSpread(t *testing.T) {
	a := lb.HashIP(netip.MustParseAddr("127.0.0.2"))
	if a != lb.HashIP(netip.MustParseAddr("127.0.0.2")) {
		t.Fatal("hash not stable")
	}
	if a == lb.HashIP(netip.MustParseAddr("127.0.0.3")) {
		t.Fatal("neighbouring addresses collide")
	}
	if n := testing.AllocsPerRun(100, func() { lb.HashIP(netip.MustParseAddr("::1")) }); n != 0 {
		t.Fatalf("HashIP allocates %v", n)
	}
}
