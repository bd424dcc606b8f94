package e2e

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// seriesLines returns the /metrics sample lines that carry one of the labels (such as
// `listener="x"`).
func seriesLines(t *testing.T, admin string, labels ...string) []string {
	t.Helper()
	_, body := getBody(t, "http://"+admin+"/metrics")
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, l := range labels {
			if strings.Contains(line, l) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// TestSeriesLeaveWithRemovedClusterAndListener: a tcp_proxy listener and its EDS cluster
// come from xDS; a connection through them stays open while the control plane removes
// both. Their series leave /metrics at once, and the connection's close afterwards brings
// none back (upstream_connections_active and downstream_connections_active would read -1).
// Another listener and cluster keep theirs. Pushed again under the same names, they count
// from 0.
func TestSeriesLeaveWithRemovedClusterAndListener(t *testing.T) {
	const node = "mosnlite-series"
	echo := framework.StartTCP(t, func(c *net.TCPConn) { io.Copy(c, c) })
	cp := xdstest.New()
	cpAddr, err := cp.Start(framework.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	goneAddr, keepAddr, admin := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	push := func(version string, withGone bool) {
		t.Helper()
		res := xdstest.Resources{}.
			Add(xds.ClusterType, xdstest.EDSCluster("keep-c")).
			Add(xds.EndpointType, xdstest.Assignment("keep-c", echo.Addr())).
			Add(xds.ListenerType, tcpProxyListener(t, "keep-l", keepAddr, "keep-c"))
		if withGone {
			res.Add(xds.ClusterType, xdstest.EDSCluster("gone-c")).
				Add(xds.EndpointType, xdstest.Assignment("gone-c", echo.Addr())).
				Add(xds.ListenerType, tcpProxyListener(t, "gone-l", goneAddr, "gone-c"))
		}
		if err := cp.SetSnapshot(node, version, res); err != nil {
			t.Fatal(err)
		}
	}
	acked := func(version string) {
		t.Helper()
		for _, typ := range []string{xds.ClusterType, xds.ListenerType} {
			if _, _, err := cp.WaitRequest(0, 20*time.Second, xdstest.ACKOf(typ, version)); err != nil {
				t.Fatalf("ACK %s %s: %v", version, typ, err)
			}
		}
	}
	push("v1", true)
	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, adsBootstrap(admin, cpAddr))
	acked("v1")

	roundTrip := func(c net.Conn, msg string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
	dialUp := func(addr string) net.Conn {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial %s: %v\n%s", addr, err, p.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// waitSeries polls until the lines with labels are exactly want (in /metrics order).
	waitSeries := func(what string, want []string, labels ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := seriesLines(t, admin, labels...)
			if strings.Join(got, "\n") == strings.Join(want, "\n") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: series\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	gone := []string{`listener="gone-l"`, `cluster="gone-c"`}
	kept := []string{`listener="keep-l"`, `cluster="keep-c"`}
	active := func(n string) []string {
		return []string{
			`mosnlite_downstream_connections_active{listener="gone-l"} ` + n,
			`mosnlite_upstream_connections_active{cluster="gone-c"} ` + n,
		}
	}

	c := dialUp(goneAddr)
	defer c.Close()
	roundTrip(c, "before")
	k := dialUp(keepAddr)
	roundTrip(k, "kept")
	k.Close()
	waitSeries("one connection open", active("1"), `_connections_active{listener="gone-l"}`, `_connections_active{cluster="gone-c"}`)
	keptBefore := len(seriesLines(t, admin, kept...))
	if keptBefore == 0 {
		t.Fatal("no series for keep-l and keep-c")
	}

	// Both removed while c is open: their series go now; c keeps working (it drains).
	push("v2", false)
	acked("v2")
	waitSeries("removed while a connection is open", nil, gone...)
	roundTrip(c, "during")
	c.Close()
	if !p.WaitLog("listener drained", 10*time.Second) {
		t.Fatalf("gone-l never drained\n%s", p.Logs())
	}
	if got := seriesLines(t, admin, gone...); len(got) > 0 {
		t.Fatalf("the connection closed after the removal; series came back:\n%s", strings.Join(got, "\n"))
	}
	if n := len(seriesLines(t, admin, kept...)); n != keptBefore {
		t.Fatalf("keep-l and keep-c have %d series; want %d as before", n, keptBefore)
	}

	// The same names again: they count from 0, not from the old connection's leftovers.
	push("v3", true)
	acked("v3")
	c2 := dialUp(goneAddr)
	defer c2.Close()
	roundTrip(c2, "again")
	waitSeries("re-added, one connection", active("1"), `_connections_active{listener="gone-l"}`, `_connections_active{cluster="gone-c"}`)
	c2.Close()
	waitSeries("re-added, connection closed", active("0"), `_connections_active{listener="gone-l"}`, `_connections_active{cluster="gone-c"}`)
}
