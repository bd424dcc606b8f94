package xprotocol_test

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

// leanServer answers bolt v1 requests with a fixed response carrying the request's id,
// without allocating per request.
func leanServer(b *testing.B, resp []byte) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveLean(c, resp)
			}()
		}
	}()
	return ln.Addr().String(), func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

func serveLean(c net.Conn, resp []byte) {
	xp := bolt.New(bolt.Options{})
	buf := make([]byte, 256<<10)
	out := make([]byte, 0, 256<<10)
	var f xproto.Frame
	n := 0
	for {
		k, err := c.Read(buf[n:])
		if err != nil {
			return
		}
		n += k
		off := 0
		out = out[:0]
		for {
			f.Reset()
			m, err := xp.Decode(buf[off:n], &f)
			if err != nil {
				return
			}
			if m == 0 {
				break
			}
			off += m
			switch f.Kind {
			case xproto.KindRequest:
				i := len(out)
				out = append(out, resp...)
				binary.BigEndian.PutUint32(out[i+5:], uint32(f.ID))
			case xproto.KindHeartbeat:
				i := len(out)
				out = append(out, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
				binary.BigEndian.PutUint32(out[i+5:], uint32(f.ID))
			}
		}
		n = copy(buf, buf[off:n])
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

// BenchmarkForward sends bolt requests over a real loopback connection through the
// engine to a real upstream, window requests in flight at a time; one op is one request
// and its response. allocs/op counts the whole process (client, engine and upstream).
func BenchmarkForward(b *testing.B) {
	for _, window := range []int{1, 32} {
		b.Run(map[int]string{1: "pingpong", 32: "window32"}[window], func(b *testing.B) {
			benchForward(b, window)
		})
	}
}

func benchForward(b *testing.B, window int) {
	xp := bolt.New(bolt.Options{})
	pool := buffer.NewPool()
	enc := func(m bolt.Message) []byte {
		buf := pool.NewBuffer(512)
		defer buf.Release()
		if err := xp.EncodeMessage(buf, &m); err != nil {
			b.Fatal(err)
		}
		return append([]byte(nil), buf.Bytes()...)
	}
	req := enc(bolt.Message{Kind: xproto.KindRequest, Version: 1, Ver2: 1, Codec: 1, Timeout: 3000,
		Class:   []byte("com.alipay.sofa.rpc.core.request.SofaRequest"),
		Headers: hdrs("service", "com.example.echo", "sofa_head_method_name", "echo"),
		Content: make([]byte, 256)})
	resp := enc(bolt.Message{Kind: xproto.KindResponse, Version: 1, Ver2: 1, Codec: 1,
		Class: []byte("com.alipay.sofa.rpc.core.response.SofaResponse"), Content: make([]byte, 256)})
	upAddr, stop := leanServer(b, resp)
	defer stop()
	v := startEnv(b, xp, upAddr, nil)
	c, err := net.Dial("tcp", v.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	batch := make([]byte, 0, len(req)*window)
	for range window {
		batch = append(batch, req...)
	}
	rbuf := make([]byte, 256<<10)
	var f xproto.Frame
	id := uint32(0)
	round := func(k int) {
		for i := range k {
			id++
			binary.BigEndian.PutUint32(batch[i*len(req)+5:], id)
		}
		if _, err := c.Write(batch[:k*len(req)]); err != nil {
			b.Fatal(err)
		}
		got, n := 0, 0
		for got < k {
			m, err := c.Read(rbuf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
			off := 0
			for {
				f.Reset()
				l, err := xp.Decode(rbuf[off:n], &f)
				if err != nil {
					b.Fatal(err)
				}
				if l == 0 {
					break
				}
				if f.Status != 0 {
					b.Fatalf("status %#x", f.Status)
				}
				off += l
				got++
			}
			n = copy(rbuf, rbuf[off:n])
		}
	}
	for range 200 {
		round(window)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += window {
		round(min(window, b.N-done))
	}
}
