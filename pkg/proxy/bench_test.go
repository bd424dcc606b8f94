package proxy_test

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// fastOrigin answers every bodiless request head on a connection with a fixed response,
// without allocating per request, so the benchmark measures the proxy.
func fastOrigin(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello")
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				buf := make([]byte, 64<<10)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	b.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// BenchmarkProxyGET is one keep-alive client connection sending GETs through the proxy
// to a keep-alive upstream. allocs/op counts the whole process (client, proxy, origin).
func BenchmarkProxyGET(b *testing.B) {
	benchGET(b, startProxy(b, fastOrigin(b)).addr)
}

// benchGET sends keep-alive GETs to the proxy at addr, one at a time.
func benchGET(b *testing.B, addr string) {
	benchRequests(b, addr, []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"))
}

// benchRequests sends req on one keep-alive connection to addr, one at a time, and reads
// each answer up to its "hello" body.
func benchRequests(b *testing.B, addr string, req []byte) {
	c := dial(b, addr)
	_ = c.SetDeadline(time.Time{})
	buf := make([]byte, 4096)
	once := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("hello")) {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	for range 100 {
		once()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		once()
	}
}
