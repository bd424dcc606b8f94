package server

import (
	"net"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
)

// seriesOf gathers m and returns the names of the series with label=value.
func seriesOf(t *testing.T, m *metrics.Set, label, value string) []string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if slices.ContainsFunc(s.GetLabel(), func(lp *dto.LabelPair) bool { return lp.GetName() == label && lp.GetValue() == value }) {
				out = append(out, mf.GetName())
			}
		}
	}
	return out
}

// waitDrains waits (bounded) for the background drains of removed listeners.
func waitDrains(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.drains.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("removed listeners did not drain within 10s")
	}
}

// TestListenerSeriesLeaveWithListener: a listener replaced under its name keeps its
// series; one removed loses them at once, even while a connection it accepted is open,
// and the connection's close (counted by reason with a lookup) does not leave one behind
// once the drain ends. The cluster the connection used loses its series when removed,
// and the open connection's close does not bring upstream_connections_active back (at
// -1); the same for a udp_proxy listener whose session ends at its drain. A listener of a
// SetListeners that fails leaves none.
func TestListenerSeriesLeaveWithListener(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"5s"}`))
	running(t, s)
	m := s.metrics
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "b", Hosts: []config.Host{{Address: prefixUpstream(t, "B:")}}}}); err != nil {
		t.Fatal(err)
	}
	set := func(js string) {
		t.Helper()
		if err := s.SetListeners(OwnerXDS, parseListeners(t, js)); err != nil {
			t.Fatal(err)
		}
	}
	set(`[` + tcpListener("x", "127.0.0.1:0", "up") + `,` + tcpListener("y", "127.0.0.1:0", "up") + `]`)
	exchange(t, dial(t, addrOf(t, s, "x")), "1", "A:1")
	// x changes (same name): its series stay.
	set(`[` + tcpListener("x", "127.0.0.1:0", "b") + `,` + tcpListener("y", "127.0.0.1:0", "up") + `]`)
	waitDrains(t, s)
	if len(seriesOf(t, m, "listener", "x")) == 0 {
		t.Fatal("listener x replaced under its name lost its series")
	}
	cx := dial(t, addrOf(t, s, "x"))
	defer cx.Close()
	exchange(t, cx, "2", "B:2")
	exchange(t, dial(t, addrOf(t, s, "y")), "3", "A:3")

	// x and cluster b removed while cx is open.
	set(`[` + tcpListener("y", "127.0.0.1:0", "up") + `]`)
	if err := s.SetClusters(OwnerXDS, nil); err != nil {
		t.Fatal(err)
	}
	if got := seriesOf(t, m, "listener", "x"); len(got) > 0 {
		t.Fatalf("listener x removed; its series stay: %v", got)
	}
	if got := seriesOf(t, m, "cluster", "b"); len(got) > 0 {
		t.Fatalf("cluster b removed; its series stay: %v", got)
	}
	exchange(t, cx, "4", "B:4") // the open connection still works
	cx.Close()
	waitDrains(t, s)
	if got := seriesOf(t, m, "listener", "x"); len(got) > 0 {
		t.Fatalf("listener x drained; series came back: %v", got)
	}
	if got := seriesOf(t, m, "cluster", "b"); len(got) > 0 {
		t.Fatalf("cluster b's last connection closed after its removal; series came back: %v", got)
	}
	if len(seriesOf(t, m, "listener", "y")) == 0 {
		t.Fatal("listener y lost its series")
	}

	// A udp_proxy listener removed with a session open: the session's end (at the drain)
	// does not bring udp_proxy_sessions_active back at -1.
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "u", Hosts: []config.Host{{Address: up.LocalAddr().String()}}}}); err != nil {
		t.Fatal(err)
	}
	udp := `{"name":"u","address":"127.0.0.1:0","network":"udp","filter_chains":[{"filters":[{"type":"udp_proxy","config":{"cluster":"u","idle_timeout":"30s"}}]}]}`
	set(`[` + tcpListener("y", "127.0.0.1:0", "up") + `,` + udp + `]`)
	uc, err := net.Dial("udp", addrOf(t, s, "u"))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	up.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := up.ReadFrom(make([]byte, 64)); err != nil {
		t.Fatalf("no datagram reached the upstream: %v", err)
	}
	if !slices.Contains(seriesOf(t, m, "listener", "u"), "mosnlite_udp_proxy_sessions_active") {
		t.Fatal("no udp_proxy_sessions_active series for listener u")
	}
	set(`[` + tcpListener("y", "127.0.0.1:0", "up") + `]`)
	if got := seriesOf(t, m, "listener", "u"); len(got) > 0 {
		t.Fatalf("listener u removed; its series stay: %v", got)
	}
	waitDrains(t, s)
	if got := seriesOf(t, m, "listener", "u"); len(got) > 0 {
		t.Fatalf("listener u drained, its session ended; series came back: %v", got)
	}

	// A failed SetListeners: z's socket and filter were built, then given up.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("z", "127.0.0.1:0", "up")+`,`+tcpListener("w", busy.Addr().String(), "up")+`]`)); err == nil {
		t.Fatal("SetListeners on a busy address succeeded")
	}
	if got := seriesOf(t, m, "listener", "z"); len(got) > 0 {
		t.Fatalf("listener z of a failed SetListeners left series: %v", got)
	}
}
