package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// The default Options.Dial is recognised, and its clusters dial ip:port hosts with the
// parsed address (fastDialer); a custom Dial is always called.
func TestDefaultDialUsesParsedAddress(t *testing.T) {
	up := testutil.StartPeer(t)
	m := NewManager(Options{})
	timeout := config.Duration(time.Second)
	if err := m.Apply([]config.Cluster{{Name: "c", ConnectTimeout: &timeout, Hosts: []config.Host{{Address: up.Addr}}}}); err != nil {
		t.Fatal(err)
	}
	c, _ := m.Get("c")
	if !c.fastDial || !isDefaultDial(defaultDial) || isDefaultDial(defaultDialer.DialContext) {
		t.Fatalf("fastDial %v: the default dialer is not recognised", c.fastDial)
	}
	if h := c.Hosts()[0]; !h.ap.IsValid() || h.ap.String() != up.Addr {
		t.Fatalf("host address parsed as %v; want %v", h.ap, up.Addr)
	}
	conn, _, done, err := c.Dial(t.Context(), &lb.Request{})
	if err != nil {
		t.Fatal(err)
	}
	defer done(lb.DoneInfo{})
	defer conn.Close()
	la := conn.LocalAddr().(*net.TCPAddr)
	if la.Port == 0 || !la.IP.IsLoopback() || conn.RemoteAddr().String() != up.Addr {
		t.Fatalf("connection %v -> %v", conn.LocalAddr(), conn.RemoteAddr())
	}
	if s := up.Accept(t, 5*time.Second); s.RemoteAddr().String() != la.String() {
		t.Fatalf("upstream sees %v; want %v", s.RemoteAddr(), la)
	}
}
