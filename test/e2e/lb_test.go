package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// Three upstreams named a, b, c behind one tcp_proxy listener; each connection asks for the
// name of the upstream it reached. These tests drive the real binary.

type trio struct {
	servers map[string]*framework.TCPServer
	order   []string
	addr    string
}

func startTrio(t *testing.T, lbType string, weights [3]uint32, delay map[string]time.Duration, hold map[string]bool, extra map[string]any) *trio {
	t.Helper()
	tr := &trio{servers: map[string]*framework.TCPServer{}, order: []string{"a", "b", "c"}}
	var hosts []host
	for i, n := range tr.order {
		s := framework.NameServer(t, n, delay[n], hold[n])
		tr.servers[n] = s
		hosts = append(hosts, host{Address: s.Addr(), Weight: weights[i]})
	}
	tr.addr = framework.FreePort(t)
	framework.StartProxy(t, tcpProxyConfig(tr.addr, lbType, hosts, extra))
	return tr
}

func (tr *trio) ask(t *testing.T, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = askName(t, tr.addr, "")
	}
	return out
}

func count(names []string) map[string]int {
	m := map[string]int{}
	for _, n := range names {
		m[n]++
	}
	return m
}

func TestLBRoundRobinExactOrder(t *testing.T) {
	tr := startTrio(t, "LB_ROUNDROBIN", [3]uint32{}, nil, nil, nil)
	got := tr.ask(t, 30)
	// The first pick's offset is random; after it, the rotation is exact.
	for i := 3; i < len(got); i++ {
		if got[i] != got[i-3] {
			t.Fatalf("round robin order broken at %d: %v", i, got)
		}
	}
	if c := count(got[:3]); len(c) != 3 {
		t.Fatalf("first three picks %v are not the three hosts", got[:3])
	}
}

func TestLBRandomWithinTolerance(t *testing.T) {
	tr := startTrio(t, "LB_RANDOM", [3]uint32{}, nil, nil, nil)
	const n = 300
	c := count(tr.ask(t, n))
	// Expectation 100 each; sd ≈ 8.2; [60, 140] is beyond 4.8 sd either side.
	for _, h := range tr.order {
		if c[h] < 60 || c[h] > 140 {
			t.Fatalf("random spread %v outside [60,140] per host over %d", c, n)
		}
	}
}

func TestLBWeightedProportions(t *testing.T) {
	tr := startTrio(t, "LB_WEIGHTED_ROUNDROBIN", [3]uint32{1, 2, 3}, nil, nil, nil)
	c := count(tr.ask(t, 60)) // ten full cycles of weight 6
	if c["a"] != 10 || c["b"] != 20 || c["c"] != 30 {
		t.Fatalf("weighted 1:2:3 over 60 = %v; want a=10 b=20 c=30", c)
	}
}

// TestLBLeastRequestPrefersIdle: connections that reach "a" are held open, so a carries
// ever more active sessions; least request must stop choosing it, where round robin would
// give it a third.
func TestLBLeastRequestPrefersIdle(t *testing.T) {
	tr := startTrio(t, "LB_LEAST_REQUEST", [3]uint32{}, nil, map[string]bool{"a": true}, nil)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hits := map[string]int{}
	for i := 0; i < 60; i++ {
		c, err := net.DialTimeout("tcp", tr.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte{'?'})
		name, err := framework.ReadLine(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		hits[name]++
		if name == "a" {
			held = append(held, c) // stays active on a
		} else {
			c.Close()
		}
	}
	// b and c sessions end at once; a keeps every one. Once a holds one session it loses
	// every two-choice comparison against an idle host.
	if hits["a"] > 3 {
		t.Fatalf("least request sent %d of 60 to the busy host (hits %v); want ≤ 3", hits["a"], hits)
	}
}

// TestLBPeakEWMAAvoidsSlowHost: "a" answers 50 ms later than b and c.
func TestLBPeakEWMAAvoidsSlowHost(t *testing.T) {
	tr := startTrio(t, "LB_PEAK_EWMA", [3]uint32{}, map[string]time.Duration{"a": 50 * time.Millisecond}, nil, nil)
	tr.ask(t, 15) // warm up: every host gets latency samples
	c := count(tr.ask(t, 90))
	if c["a"] > 9 {
		t.Fatalf("peak EWMA sent %d of 90 to the host 50 ms slower (%v); want ≤ 9 (round robin: 30)", c["a"], c)
	}
}

// TestLBMaglevConsistent: tcp_proxy hashes the client's source IP. Each of 60 loopback
// source addresses keeps its host; when host "b" dies, only b's keys move.
func TestLBMaglevConsistent(t *testing.T) {
	tr := startTrio(t, "LB_MAGLEV", [3]uint32{}, nil, nil, map[string]any{"max_connect_attempts": 3})
	srcs := make([]string, 60)
	for i := range srcs {
		srcs[i] = fmt.Sprintf("127.0.%d.%d", 10+i/200, 2+i%200)
	}
	first := map[string]string{}
	for _, s := range srcs {
		first[s] = askName(t, tr.addr, s)
	}
	for _, s := range srcs { // same key → same host
		if got := askName(t, tr.addr, s); got != first[s] {
			t.Fatalf("source %s moved from %s to %s with no host change", s, first[s], got)
		}
	}
	per := count(mapValues(first))
	if per["a"] < 8 || per["b"] < 8 || per["c"] < 8 {
		t.Fatalf("maglev spread over 60 keys = %v; want each host ≥ 8", per)
	}
	tr.servers["b"].Close() // host leaves: dials to it now fail and go to another host
	moved := 0
	for _, s := range srcs {
		got := askName(t, tr.addr, s)
		if got == "b" {
			t.Fatalf("source %s still reached the dead host", s)
		}
		if first[s] != "b" && got != first[s] {
			t.Fatalf("source %s moved from live host %s to %s", s, first[s], got)
		}
		if got != first[s] {
			moved++
		}
	}
	if moved != per["b"] {
		t.Fatalf("%d keys moved; want exactly b's %d (≈1/3)", moved, per["b"])
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
