package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// Protocols the load generator speaks.
const (
	protoBolt  = "bolt"
	protoDubbo = "dubbo"
	protoHTTP1 = "http1"
)

// Names routed by the generated mosnlite config.
const (
	benchBoltService  = "bench.EchoService"
	benchDubboService = "com.example.BenchService"
)

// shape is one load: what is sent and how much.
type shape struct {
	proto       string
	addr        string
	concurrency int // requests in flight in total
	conns       int // RPC: TCP connections sharing the in-flight requests; HTTP/1.1: one per in-flight request
	payload     int // request payload bytes (bolt content, dubbo byte[] argument, HTTP body)
	requests    int64
	duration    time.Duration // time bound of the window
}

// window is one measured run.
type window struct {
	Requests int64
	Errors   int64
	FirstErr string
	Elapsed  time.Duration
	ProxyCPU time.Duration // -1: not measured
	Lat      []time.Duration
}

func (w *window) rate() float64 { return float64(w.Requests) / w.Elapsed.Seconds() }

func (w *window) quantile(q float64) time.Duration {
	if len(w.Lat) == 0 {
		return 0
	}
	i := int(q * float64(len(w.Lat)-1))
	return w.Lat[i]
}

// cpuPerReq is the proxy's CPU time per request in µs; -1 when not measured.
func (w *window) cpuPerReq() float64 {
	if w.ProxyCPU < 0 || w.Requests == 0 {
		return -1
	}
	return float64(w.ProxyCPU.Microseconds()) / float64(w.Requests)
}

// template is one request frame with a place for the id.
type template struct {
	frame  []byte
	idOff  int
	idSize int // 4 (bolt) or 8 (dubbo)
}

func (t *template) appendWithID(dst []byte, id uint64) []byte {
	n := len(dst)
	dst = append(dst, t.frame...)
	if t.idSize == 4 {
		binary.BigEndian.PutUint32(dst[n+t.idOff:], uint32(id))
	} else {
		binary.BigEndian.PutUint64(dst[n+t.idOff:], id)
	}
	return dst
}

// requestTemplate builds the request once: bolt with mosnlite's codec (v1, class
// SofaRequest, service header), dubbo with dubbo-go-hessian2 (one byte[] argument).
func requestTemplate(proto string, payload int) (*template, error) {
	body := make([]byte, payload)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	switch proto {
	case protoBolt:
		b, err := rpcpeer.EncodeBolt(rpcpeer.BoltRequest(1, benchBoltService, "echo", body))
		if err != nil {
			return nil, err
		}
		return &template{frame: b, idOff: 5, idSize: 4}, nil
	case protoDubbo:
		svc := dubboService()
		b, err := rpcpeer.EncodeDubboRequest(0, svc, []any{body}, nil, true)
		if err != nil {
			return nil, err
		}
		return &template{frame: b, idOff: 4, idSize: 8}, nil
	}
	return nil, fmt.Errorf("no RPC template for %q", proto)
}

// frameLen returns the length of the response frame at the front of b (0: need more) and
// its id.
func frameLen(proto string, b []byte) (int, uint64, error) {
	switch proto {
	case protoBolt:
		if len(b) < 20 {
			return 0, 0, nil
		}
		if b[0] != 0x01 || b[1] != 0 {
			return 0, 0, fmt.Errorf("bolt: unexpected frame start % x", b[:2])
		}
		n := 20 + int(binary.BigEndian.Uint16(b[12:])) + int(binary.BigEndian.Uint16(b[14:])) + int(binary.BigEndian.Uint32(b[16:]))
		if binary.BigEndian.Uint16(b[10:]) != 0 {
			return 0, 0, fmt.Errorf("bolt: response status %#x", binary.BigEndian.Uint16(b[10:]))
		}
		if len(b) < n {
			return 0, 0, nil
		}
		return n, uint64(binary.BigEndian.Uint32(b[5:])), nil
	case protoDubbo:
		if len(b) < 16 {
			return 0, 0, nil
		}
		if b[0] != 0xda || b[1] != 0xbb {
			return 0, 0, fmt.Errorf("dubbo: bad magic % x", b[:2])
		}
		if b[3] != 20 {
			return 0, 0, fmt.Errorf("dubbo: response status %d", b[3])
		}
		n := 16 + int(binary.BigEndian.Uint32(b[12:]))
		if len(b) < n {
			return 0, 0, nil
		}
		return n, binary.BigEndian.Uint64(b[4:]), nil
	}
	return 0, 0, errors.New("unknown protocol")
}

// counter hands out the fixed request budget across connections.
type counter struct {
	left     atomic.Int64
	deadline time.Time
}

func (c *counter) take() bool {
	if time.Now().After(c.deadline) {
		return false
	}
	return c.left.Add(-1) >= 0
}

// run drives one window: warm-up is the same load, not recorded.
func run(ctx context.Context, s shape, cpu func() (time.Duration, error)) (*window, error) {
	var cpu0 time.Duration
	if cpu != nil {
		c, err := cpu()
		if err != nil {
			return nil, err
		}
		cpu0 = c
	}
	start := time.Now()
	cnt := &counter{deadline: start.Add(s.duration)}
	cnt.left.Store(s.requests)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		w    = &window{ProxyCPU: -1}
		lats [][]time.Duration
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		w.Errors++
		if w.FirstErr == "" {
			w.FirstErr = err.Error()
		}
	}
	workers := s.conns
	perConn := s.concurrency / max(s.conns, 1)
	if s.proto == protoHTTP1 {
		workers, perConn = s.concurrency, 1
	}
	lats = make([][]time.Duration, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if s.proto == protoHTTP1 {
				lats[i], err = httpWorker(ctx, s, cnt)
			} else {
				lats[i], err = rpcWorker(ctx, s, perConn, cnt)
			}
			if err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	w.Elapsed = time.Since(start)
	if cpu != nil {
		c, err := cpu()
		if err != nil {
			return nil, err
		}
		w.ProxyCPU = c - cpu0
	}
	for _, l := range lats {
		w.Lat = append(w.Lat, l...)
	}
	slices.Sort(w.Lat)
	w.Requests = int64(len(w.Lat))
	return w, nil
}

// rpcWorker keeps inflight requests outstanding on one connection: each response read
// releases the next request; the requests released by one read go out in one write.
func rpcWorker(ctx context.Context, s shape, inflight int, cnt *counter) ([]time.Duration, error) {
	tpl, err := requestTemplate(s.proto, s.payload)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	const slots = 1 << 16
	sent := make([]time.Time, slots)
	lat := make([]time.Duration, 0, int(min(s.requests, 1<<22)))
	var id uint64
	out := make([]byte, 0, inflight*len(tpl.frame))
	outstanding := 0
	issue := func(n int) error {
		out = out[:0]
		now := time.Now()
		for i := 0; i < n && cnt.take(); i++ {
			id++
			sent[id%slots] = now
			out = tpl.appendWithID(out, id)
			outstanding++
		}
		if len(out) == 0 {
			return nil
		}
		_, err := conn.Write(out)
		return err
	}
	if err := issue(inflight); err != nil {
		return lat, err
	}
	buf := make([]byte, 256<<10)
	var r, wpos int
	for outstanding > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if wpos == len(buf) {
			return lat, fmt.Errorf("%s: a response over %d bytes", s.proto, len(buf))
		}
		n, err := conn.Read(buf[wpos:])
		if err != nil {
			return lat, fmt.Errorf("%s read with %d outstanding: %w", s.proto, outstanding, err)
		}
		wpos += n
		now := time.Now()
		done := 0
		for {
			fl, rid, err := frameLen(s.proto, buf[r:wpos])
			if err != nil {
				return lat, err
			}
			if fl == 0 {
				break
			}
			lat = append(lat, now.Sub(sent[rid%slots]))
			r += fl
			done++
		}
		outstanding -= done
		if r == wpos {
			r, wpos = 0, 0
		} else if len(buf)-wpos < 64<<10 {
			wpos = copy(buf, buf[r:wpos])
			r = 0
		}
		if err := issue(done); err != nil {
			return lat, err
		}
	}
	return lat, nil
}

// httpWorker sends POST requests one at a time on one keep-alive connection.
func httpWorker(ctx context.Context, s shape, cnt *counter) ([]time.Duration, error) {
	conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	body := strings.Repeat("b", s.payload)
	req := []byte("POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		strconv.Itoa(s.payload) + "\r\n\r\n" + body)
	br := bufio.NewReaderSize(conn, 64<<10)
	lat := make([]time.Duration, 0, 1024)
	discard := make([]byte, 64<<10)
	for cnt.take() {
		t0 := time.Now()
		_ = conn.SetDeadline(t0.Add(10 * time.Second))
		if _, err := conn.Write(req); err != nil {
			return lat, err
		}
		status, cl := 0, -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return lat, fmt.Errorf("http1: reading the response head: %w", err)
			}
			if status == 0 {
				if len(line) < 12 || string(line[:5]) != "HTTP/" {
					return lat, fmt.Errorf("http1: bad status line %q", line)
				}
				status, _ = strconv.Atoi(string(line[9:12]))
				continue
			}
			if len(line) <= 2 {
				break
			}
			if k, v, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
				cl, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if cl < 0 {
			return lat, errors.New("http1: response without Content-Length")
		}
		for cl > 0 {
			n, err := br.Read(discard[:min(cl, len(discard))])
			if err != nil {
				return lat, err
			}
			cl -= n
		}
		if status != 200 {
			return lat, fmt.Errorf("http1: status %d", status)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// httpUpstream answers every request with payload bytes (a minimal HTTP/1.1 server:
// Content-Length bodies, keep-alive).
type httpUpstream struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs map[net.Conn]struct{}
}

func startHTTPUpstream(payload int) (*httpUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &httpUpstream{ln: ln, cs: map[net.Conn]struct{}{}}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		strconv.Itoa(payload) + "\r\n\r\n" + strings.Repeat("r", payload))
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.cs[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer func() {
					u.mu.Lock()
					delete(u.cs, c)
					u.mu.Unlock()
					c.Close()
				}()
				serveHTTP(c, resp)
			}()
		}
	}()
	return u, nil
}

func serveHTTP(c net.Conn, resp []byte) {
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		cl, chunked, first := 0, false, true
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if first {
				first = false
				continue
			}
			if len(line) <= 2 {
				break
			}
			k, v, ok := strings.Cut(string(line), ":")
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "content-length":
				cl, _ = strconv.Atoi(strings.TrimSpace(v))
			case "transfer-encoding":
				chunked = strings.Contains(strings.ToLower(v), "chunked")
			}
		}
		if chunked {
			if !skipChunked(br) {
				return
			}
		} else if _, err := br.Discard(cl); err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func skipChunked(br *bufio.Reader) bool {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false
		}
		sz, _, _ := strings.Cut(strings.TrimSpace(string(line)), ";")
		n, err := strconv.ParseInt(sz, 16, 64)
		if err != nil {
			return false
		}
		if n == 0 {
			for { // trailers until the empty line
				l, err := br.ReadSlice('\n')
				if err != nil {
					return false
				}
				if len(l) <= 2 {
					return true
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return false
		}
	}
}

func (u *httpUpstream) Addr() string { return u.ln.Addr().String() }

func (u *httpUpstream) Close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.cs {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}
