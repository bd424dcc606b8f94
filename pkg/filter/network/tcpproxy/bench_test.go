//go:build unix

package tcpproxy_test

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	u, s := cpuTimes()
	return u + s
}

// cpuTimes is the process's user and system CPU time, apart.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// BenchmarkTCPProxyBulk measures one long session carrying bytes client → upstream
// through a real listener and the filter (direct: the same without the proxy).
func BenchmarkTCPProxyBulk(b *testing.B) {
	const chunk = 1 << 20
	sink := func(b *testing.B) (*upstream, chan int64) {
		total := make(chan int64, 1)
		u := startUpstream(b, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			total <- n
		})
		return u, total
	}
	run := func(b *testing.B, addr string, total chan int64) {
		c, err := net.DialTimeout("tcp", addr, testTimeout)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := randomBytes(b, chunk)
		b.SetBytes(chunk)
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := cpuTime()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		select {
		case n := <-total:
			if n != int64(b.N)*chunk {
				b.Fatalf("upstream got %d bytes, want %d", n, int64(b.N)*chunk)
			}
		case <-time.After(testTimeout):
			b.Fatal("upstream did not finish")
		}
		// Process CPU (client, proxy and sink together) per MiB carried.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/MiB")
	}
	b.Run("proxy", func(b *testing.B) {
		u, total := sink(b)
		e := newEnvAt(b, zapcore.InfoLevel, simpleCluster("c1", "", u.addr()))
		ln, _ := e.proxy(lnName, `{"cluster":"c1"}`)
		run(b, ln.Addr().String(), total)
	})
	b.Run("direct", func(b *testing.B) {
		u, total := sink(b)
		run(b, u.addr(), total)
	})
}

// BenchmarkTCPProxyConnect measures a whole session per op: connect through the proxy,
// send a request, read the reply, close. Allocations include the client, the listener,
// the cluster's dial and the test upstream, not only the filter.
func BenchmarkTCPProxyConnect(b *testing.B) {
	u := startUpstream(b, func(c net.Conn) {
		var buf [4]byte
		if _, err := io.ReadFull(c, buf[:]); err == nil {
			c.Write([]byte("pong"))
		}
	})
	e := newEnvAt(b, zapcore.InfoLevel, simpleCluster("c1", "", u.addr()))
	ln, _ := e.proxy(lnName, `{"cluster":"c1"}`)
	addr := ln.Addr().String()
	req := []byte("ping")
	var reply [16]byte
	b.ReportAllocs()
	b.ResetTimer()
	u0, s0 := cpuTimes()
	for range b.N {
		c, err := net.DialTimeout("tcp", addr, testTimeout)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(req)
		if n, err := io.ReadAtLeast(c, reply[:], 4); err != nil || string(reply[:n]) != "pong" {
			b.Fatalf("reply %q, %v", reply[:n], err)
		}
		c.Close()
	}
	b.StopTimer()
	idle(b, ln)
	// Process CPU (client, proxy and upstream together) per session.
	u1, s1 := cpuTimes()
	b.ReportMetric(float64(u1-u0)/float64(b.N), "user-ns/op")
	b.ReportMetric(float64(s1-s0)/float64(b.N), "sys-ns/op")
}
