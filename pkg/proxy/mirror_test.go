package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// hangingServer accepts connections, signals each request head it reads and never answers.
func hangingServer(t *testing.T) (addr string, heads <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
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
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				select {
				case ch <- req.URL.Path:
				default:
				}
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

// TestMirrorFireAndForget: a mirror cluster that never answers does not delay the main
// request; the mirrored copy arrives; closing the proxy stops the mirror workers
// (goleak checks at the end of the package).
func TestMirrorFireAndForget(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "main") })
	shadow, heads := hangingServer(t)
	e := startProxyWith(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
	 {"match":{"prefix":"/"},"route":{"cluster_name":"c"},"request_mirror_policies":{"cluster":"shadow","percent":100}}]}]}`,
		`[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}]},
		  {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow+`"}]}]`)
	for i := 0; i < 3; i++ {
		resp, body := roundTrip(t, e.addr, "GET /copy HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || body != "main" {
			t.Fatalf("main: %d %q", resp.StatusCode, body)
		}
	}
	select {
	case p := <-heads:
		if !strings.HasPrefix(p, "/copy") {
			t.Fatalf("mirrored path %q", p)
		}
	case <-time.After(testTimeout):
		t.Fatal("no mirrored request")
	}
}

// TestMirrorRequestBodies: an HTTP/1 request with a body is mirrored with it, as the main
// upstream received it (Content-Length or chunked); a body beyond the copy's limit is
// not mirrored (counted as dropped) and the main request is unaffected.
func TestMirrorRequestBodies(t *testing.T) {
	o := startOrigin(t, echo)
	type seen struct{ path, body string }
	got := make(chan seen, 8)
	shadow := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			b = []byte("read error: " + err.Error())
		}
		got <- seen{r.URL.Path, string(b)}
	})
	e := startProxyWith(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
	 {"match":{"prefix":"/"},"route":{"cluster_name":"c"},"request_mirror_policies":{"cluster":"shadow","percent":100}}]}]}`,
		`[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}]},
		  {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow.addr()+`"}]}]`)
	big := strings.Repeat("x", 70<<10)
	for _, tc := range []struct{ req, want string }{
		{"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, big},
		{"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
	} {
		resp, body := roundTrip(t, e.addr, tc.req)
		if resp.StatusCode != 200 || body != tc.want {
			t.Fatalf("main request: %d, %d bytes", resp.StatusCode, len(body))
		}
	}
	want := map[seen]bool{{"/len", "hello"}: true, {"/chunked", "hello world"}: true}
	for n := len(want); n > 0; n-- { // the mirror workers run concurrently: any order
		select {
		case s := <-got:
			if !want[s] {
				t.Fatalf("mirror got %s (%d bytes %.20q); want /len and /chunked with their bodies, not /big", s.path, len(s.body), s.body)
			}
			delete(want, s)
		case <-time.After(testTimeout):
			t.Fatalf("mirrored requests missing: %v", want)
		}
	}
	if v := counterValue(t, e.m.UpstreamMirrors.WithLabelValues("shadow", "dropped")); v != 1 {
		t.Fatalf("mirrors dropped = %v; want 1 (the big body)", v)
	}
}

// TestMirrorInterimAndFinalInOneRead: a mirror upstream that sends an interim answer and
// the final one in one write (and keeps the connection open) counts as sent at once: the
// head behind the interim one is parsed from what was read, not waited for.
func TestMirrorInterimAndFinalInOneRead(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "main") })
	shadow := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
		_, _ = io.Copy(io.Discard, br) // open until the proxy closes
	})
	e := startProxyWith(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
	 {"match":{"prefix":"/"},"route":{"cluster_name":"c"},"request_mirror_policies":{"cluster":"shadow","percent":100}}]}]}`,
		`[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}]},
		  {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow+`"}]}]`)
	if resp, body := roundTrip(t, e.addr, "GET /hints HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "main" {
		t.Fatalf("main: %d %q", resp.StatusCode, body)
	}
	testutil.Eventually(t, testTimeout, "the mirror counted as sent", func() bool {
		return counterValue(t, e.m.UpstreamMirrors.WithLabelValues("shadow", "sent")) == 1
	})
	if v := counterValue(t, e.m.UpstreamMirrors.WithLabelValues("shadow", "failed")); v != 0 {
		t.Fatalf("mirrors failed = %v", v)
	}
}
