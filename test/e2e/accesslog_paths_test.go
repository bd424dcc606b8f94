package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// alFormat puts the fields under test on one '|'-separated line.
const alFormat = "%protocol%|%response_code%|%response_flag%|%bytes_received%|%bytes_sent%|%upstream_host%" +
	"|%duration%|%request_header_x-id%|%response_header_x-up%|%x-mosn-method%|%x-mosn-path%" +
	"|%request_received_duration%|%response_received_duration%|%upstream_local_address%|%downstream_remote_address%|%upstream_cluster%"

// alLine is one parsed access log line.
type alLine struct {
	proto, flags, host, id, up, method, path string
	upLocal, downRemote, cluster             string
	reqDur, respDur                          time.Duration
	code                                     int
	recv, sent                               uint64
	dur                                      time.Duration
	raw                                      string
}

func parseALLine(s string) (alLine, bool) {
	f := strings.Split(s, "|")
	if len(f) != 16 {
		return alLine{}, false
	}
	l := alLine{proto: f[0], flags: f[2], host: f[5], id: f[7], up: f[8], method: f[9], path: f[10], raw: s}
	l.code, _ = strconv.Atoi(f[1])
	l.recv, _ = strconv.ParseUint(f[3], 10, 64)
	l.sent, _ = strconv.ParseUint(f[4], 10, 64)
	l.dur, _ = time.ParseDuration(f[6])
	l.reqDur, _ = time.ParseDuration(f[11])
	l.respDur, _ = time.ParseDuration(f[12])
	l.upLocal, l.downRemote, l.cluster = f[13], f[14], f[15]
	return l, true
}

// alTruth is what the client saw for one request.
type alTruth struct {
	id, method, path string
	code             int    // status the client got; 0: none
	recv, sent       uint64 // bytes the proxy read from / wrote to the client
	minDur           time.Duration
	host             string // upstream that answered ("" for a local answer)
	peer             string // the proxy's address as the upstream saw it
	client           string // the client's address ("": unknown)
	left             bool   // the client left before the answer
	cut              bool   // the upstream broke off the response body
}

// alUpstream answers by path: /size/N (N body bytes, Content-Length), /chunk/N (N bytes
// streamed without length), /sleep/MS, /status/N, /204. Every answer names the serving
// address in X-Up.
func alUpstream(t *testing.T) string {
	addr, _ := h2cUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			w.Header().Set("X-Up", la.String())
		}
		w.Header().Set("X-Peer", r.RemoteAddr)
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
		n := 0
		if len(parts) > 1 {
			n, _ = strconv.Atoi(parts[1])
		}
		switch parts[0] {
		case "size":
			w.Header().Set("Content-Length", strconv.Itoa(n))
			if r.Method != http.MethodHead {
				_, _ = w.Write(bytes.Repeat([]byte("s"), n))
			}
		case "chunk":
			for i := 0; i < n; i += 100 {
				_, _ = w.Write(bytes.Repeat([]byte("c"), min(100, n-i)))
				w.(http.Flusher).Flush()
			}
		case "sleep", "timeout":
			select {
			case <-time.After(time.Duration(n) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, "slept")
		case "status":
			w.WriteHeader(n)
			_, _ = io.WriteString(w, "status")
		case "204":
			w.WriteHeader(http.StatusNoContent)
		case "cut": // promises 2n bytes, sends n, then breaks the stream or connection
			w.Header().Set("Content-Length", strconv.Itoa(2*n))
			_, _ = w.Write(bytes.Repeat([]byte("x"), n))
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
			panic(http.ErrAbortHandler)
		}
	})
	return addr
}

// alConfig is one proxy listener with an access log and the routes the cases use:
// /direct (local answer), /timeout (300ms), /retry (cluster "two": a refusing host and
// the good one), /r5 (cluster "five": a host answering 503 and the good one), /dead (a
// refusing host only), the rest to "up".
func alConfig(listen, down, up string, filters []any, logPath, good, refusing, bad5 string) string {
	pc := map[string]any{"downstream_protocol": down, "router_config_name": "r"}
	if up != "" {
		pc["upstream_protocol"] = up
	}
	route := func(prefix, cl string, extra map[string]any) any {
		a := map[string]any{"cluster_name": cl}
		for k, v := range extra {
			a[k] = v
		}
		return map[string]any{"match": map[string]any{"prefix": prefix}, "route": a}
	}
	routes := []any{}
	if len(filters) > 0 {
		routes = append(routes, map[string]any{"match": map[string]any{"prefix": "/abort"},
			"route":             map[string]any{"cluster_name": "up"},
			"per_filter_config": map[string]any{"fault": map[string]any{"abort": map[string]any{"status": 418, "percentage": 100}}}})
	}
	routes = append(routes, []any{
		map[string]any{"match": map[string]any{"prefix": "/direct"},
			"direct_response": map[string]any{"status": 200, "body": "direct-body"}},
		route("/timeout", "up", map[string]any{"timeout": "300ms"}),
		route("/retry", "two", map[string]any{"retry_policy": map[string]any{"retry_on": true, "num_retries": 3}}),
		route("/r5", "five", map[string]any{"retry_policy": map[string]any{"retry_on": true, "num_retries": 3}}),
		route("/dead", "dead", nil),
		route("/", "up", nil),
	}...)
	cluster := func(name string, hosts ...string) any {
		hs := []any{}
		for _, h := range hosts {
			hs = append(hs, map[string]any{"address": h})
		}
		return map[string]any{"name": name, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
			"hosts": hs, "connect_timeout": "1s"}
	}
	l := map[string]any{
		"name": "l7", "address": listen, "bind_port": true,
		"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy", "config": pc}}}},
		"access_logs":   []any{map[string]any{"log_path": logPath, "log_format": alFormat}},
	}
	if len(filters) > 0 {
		l["stream_filters"] = filters
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{"router_config_name": "r",
				"virtual_hosts": []any{map[string]any{"name": "v", "domains": []any{"*"}, "routers": routes}}}},
			"listeners": []any{l},
		}},
		"cluster_manager": map[string]any{"clusters": []any{
			cluster("up", good), cluster("two", refusing, good), cluster("five", bad5, good), cluster("dead", refusing)}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// alCase is one request: method, path, body (chunked: sent without a length).
type alCase struct {
	id, method, path string
	body             int
	chunked          bool
	minDur           time.Duration
	local            bool // answered by the proxy
	cut              bool // the upstream breaks the body off
}

func alCases(filters bool) []alCase {
	cs := []alCase{
		{id: "cl", method: "POST", path: "/size/1000", body: 500},
		{id: "chunkreq", method: "POST", path: "/size/10", body: 300, chunked: true},
		{id: "chunkresp", method: "GET", path: "/chunk/700"},
		{id: "head", method: "HEAD", path: "/size/400"},
		{id: "nocontent", method: "GET", path: "/204"},
		{id: "s500", method: "GET", path: "/status/500"},
		{id: "big", method: "POST", path: "/size/1048576", body: 300000},
		{id: "bigchunk", method: "PUT", path: "/chunk/200000", body: 200000, chunked: true},
		{id: "sleep", method: "GET", path: "/sleep/300", minDur: 300 * time.Millisecond},
		{id: "direct", method: "GET", path: "/direct", local: true},
		{id: "timeout", method: "GET", path: "/timeout/1000", local: true, minDur: 300 * time.Millisecond},
		{id: "dead", method: "GET", path: "/dead", local: true},
		{id: "cut", method: "GET", path: "/cut/3000", cut: true},
	}
	if filters {
		cs = append(cs, alCase{id: "abort", method: "POST", path: "/abort", body: 100, local: true})
	}
	for i := 0; i < 4; i++ {
		cs = append(cs, alCase{id: fmt.Sprintf("retry%d", i), method: "GET", path: "/retry/x"},
			alCase{id: fmt.Sprintf("r5x%d", i), method: "GET", path: "/r5/x"})
	}
	return cs
}

type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// alH1Request is the exact request bytes of a case.
func alH1Request(c alCase) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: app\r\nX-Id: %s\r\n", c.method, c.path, c.id)
	body := bytes.Repeat([]byte("b"), c.body)
	switch {
	case c.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < len(body); i += 128 {
			p := body[i:min(i+128, len(body))]
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
		}
		b.WriteString("0\r\n\r\n")
	case c.body > 0:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", c.body)
		b.Write(body)
	default:
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// alRunH1 sends the cases over raw keep-alive connections, or a connection per case
// (fresh), and counts the wire bytes both ways. A local answer moves an event-loop
// connection to the goroutine path, so fresh keeps every case on the loop.
func alRunH1(t *testing.T, addr string, cases []alCase, fresh bool) []alTruth {
	var out []alTruth
	var conn net.Conn
	var cr *countReader
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for _, c := range cases {
		if conn == nil {
			var err error
			conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cr = &countReader{r: conn}
			br = bufio.NewReader(cr)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		req := alH1Request(c)
		start := cr.n - br.Buffered()
		if _, err := conn.Write(req); err != nil {
			t.Fatalf("%s: write: %v", c.id, err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: c.method})
		if err != nil {
			t.Fatalf("%s: read: %v", c.id, err)
		}
		_, cerr := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		tr := alTruth{id: c.id, method: c.method, path: c.path, code: resp.StatusCode,
			recv: uint64(len(req)), sent: uint64(cr.n - br.Buffered() - start), minDur: c.minDur,
			client: conn.LocalAddr().String(), cut: c.cut}
		if c.id == "abort" && resp.Close {
			tr.recv -= uint64(c.body) // answered and closed without reading the body
		}
		if c.cut {
			if cerr == nil {
				t.Errorf("%s: the cut body read without error", c.id)
			}
			// The client has all the proxy wrote once the connection ends.
			n, _ := io.Copy(io.Discard, br)
			tr.sent += uint64(n)
			resp.Close = true
		}
		if !c.local {
			tr.host = resp.Header.Get("X-Up")
			tr.peer = resp.Header.Get("X-Peer")
		}
		out = append(out, tr)
		if resp.Close || fresh {
			_ = conn.Close()
			conn = nil
		}
	}
	// A client that leaves while the upstream still works on its request.
	lc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	left := alCase{id: "left", method: "GET", path: "/sleep/800"}
	req := alH1Request(left)
	_, _ = lc.Write(req)
	time.Sleep(150 * time.Millisecond)
	_ = lc.Close()
	out = append(out, alTruth{id: "left", method: "GET", path: left.path, recv: uint64(len(req)), left: true})

	// A client that leaves halfway through its request body: 300 of 1000 bytes.
	bc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lb := alCase{id: "leftbody", method: "POST", path: "/size/10", body: 1000}
	req = alH1Request(lb)
	req = req[:len(req)-700]
	_, _ = bc.Write(req)
	time.Sleep(150 * time.Millisecond)
	_ = bc.Close()
	return append(out, alTruth{id: "leftbody", method: "POST", path: lb.path, recv: uint64(len(req)), left: true})
}

// alRunH2 sends the cases over one h2c connection; the byte counts are body bytes.
func alRunH2(t *testing.T, addr string, cases []alCase) []alTruth {
	cl := h2cClient(t)
	var out []alTruth
	for _, c := range cases {
		var body io.Reader
		if c.body > 0 {
			body = bytes.NewReader(bytes.Repeat([]byte("b"), c.body))
			if c.chunked {
				body = io.MultiReader(body) // hides the length
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, c.method, "http://"+addr+c.path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Id", c.id)
		client := ""
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { client = i.Conn.LocalAddr().String() }}))
		resp, err := cl.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", c.id, err)
		}
		n, cerr := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		cancel()
		if c.cut && cerr == nil {
			t.Errorf("%s: the cut body read without error", c.id)
		}
		tr := alTruth{id: c.id, method: c.method, path: c.path, code: resp.StatusCode,
			recv: uint64(c.body), sent: uint64(n), minDur: c.minDur, client: client, cut: c.cut}
		if c.id == "abort" {
			tr.recv = 0 // answered before the body, which is not read
		}
		if !c.local {
			tr.host = resp.Header.Get("X-Up")
			tr.peer = resp.Header.Get("X-Peer")
		}
		out = append(out, tr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/sleep/800", nil)
	req.Header.Set("X-Id", "left")
	if resp, err := cl.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatal("left: got an answer before the deadline")
	}
	return append(out, alTruth{id: "left", method: "GET", path: "/sleep/800", left: true})
}

// alReadLog waits until the log holds a line for every id and returns them by id.
func alReadLog(t *testing.T, path string, ids []string) map[string][]alLine {
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		got := map[string][]alLine{}
		for _, s := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l, ok := parseALLine(s); ok {
				got[l.id] = append(got[l.id], l)
			} else if s != "" {
				t.Errorf("unparsable line %q", s)
			}
		}
		missing := []string{}
		for _, id := range ids {
			if len(got[id]) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			if len(missing) > 0 {
				t.Errorf("no log line for %v; log:\n%s", missing, b)
			}
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alCluster is the cluster alConfig routes path to ("-": answered before a cluster).
func alCluster(path string) string {
	switch {
	case path == "/direct", path == "/abort": // answered before the router
		return "-"
	case strings.HasPrefix(path, "/retry"):
		return "two"
	case strings.HasPrefix(path, "/r5"):
		return "five"
	case path == "/dead":
		return "dead"
	}
	return "up"
}

// alCompare checks each line against what the client saw.
func alCompare(t *testing.T, proto string, h2Up bool, truths []alTruth, got map[string][]alLine) {
	for _, tr := range truths {
		ls := got[tr.id]
		if len(ls) == 0 {
			continue
		}
		if len(ls) > 1 {
			for _, x := range ls {
				t.Errorf("%s: %d lines for one request: %q", tr.id, len(ls), x.raw)
			}
		}
		l := ls[0]
		bad := func(field string, want, logged any) {
			t.Errorf("%s %s %s: %s: expected %v, logged %v (line %q)", tr.method, tr.path, tr.id, field, want, logged, l.raw)
		}
		if l.proto != proto {
			bad("protocol", proto, l.proto)
		}
		if l.method != tr.method {
			bad("x-mosn-method", tr.method, l.method)
		}
		if l.path != tr.path {
			bad("x-mosn-path", tr.path, l.path)
		}
		if tr.left {
			if !strings.Contains(l.flags, "DC") {
				bad("response_flag", "DC", l.flags)
			}
			if l.code == http.StatusOK {
				bad("response_code", "not 200 (the client got nothing)", l.code)
			}
			if l.sent != 0 {
				bad("bytes_sent", 0, l.sent)
			}
			if l.recv != tr.recv {
				bad("bytes_received", tr.recv, l.recv)
			}
			continue
		}
		if l.code != tr.code {
			bad("response_code", tr.code, l.code)
		}
		if l.recv != tr.recv {
			bad("bytes_received", tr.recv, l.recv)
		}
		if l.sent != tr.sent {
			bad("bytes_sent", tr.sent, l.sent)
		}
		if l.dur < tr.minDur {
			bad("duration", ">= "+tr.minDur.String(), l.dur)
		}
		if tr.host != "" && l.host != tr.host {
			bad("upstream_host", tr.host, l.host)
		}
		if tr.host != "" && l.up != tr.host {
			bad("response_header_x-up", tr.host, l.up)
		}
		if tr.peer != "" && l.upLocal != tr.peer {
			bad("upstream_local_address", tr.peer, l.upLocal)
		}
		if tr.client != "" && l.downRemote != tr.client {
			bad("downstream_remote_address", tr.client, l.downRemote)
		}
		if l.reqDur > l.dur || l.respDur > l.dur {
			bad("request/response_received_duration", "<= duration "+l.dur.String(), l.reqDur.String()+", "+l.respDur.String())
		}
		if tr.host != "" && l.respDur < tr.minDur {
			bad("response_received_duration", ">= "+tr.minDur.String(), l.respDur)
		}
		wantFlags := "-"
		switch tr.id {
		case "direct":
			wantFlags = "LR"
		case "timeout":
			wantFlags = "UT"
		case "dead":
			wantFlags = "UF"
		case "cut":
			wantFlags = "UR"
		case "abort":
			wantFlags = "FI"
		}
		if l.flags != wantFlags {
			bad("response_flag", wantFlags, l.flags)
		}
		if tr.id == "direct" && l.host != "-" {
			bad("upstream_host", "-", l.host)
		}
		if want := alCluster(tr.path); l.cluster != want {
			bad("upstream_cluster", want, l.cluster)
		}
	}
}

// TestAccessLogPaths compares every access log field with what the client and upstream
// saw, on each HTTP data path. It caught upstream_host naming the first-picked host after
// a retry moved to another (connect failure or 5xx) on the HTTP/1 goroutine path, HTTP/2
// to HTTP/1 with filters, and HTTP/2 upstreams, and upstream_cluster "-" on HTTP/1 when
// the cluster's host refused the connection.
func TestAccessLogPaths(t *testing.T) {
	fault0 := []any{map[string]any{"type": "fault", "config": map[string]any{
		"abort": map[string]any{"status": 500, "percentage": 0}}}}
	paths := []struct {
		name, down, up string
		filters        []any
		fresh          bool // HTTP/1: a connection per request
		goroutines     bool // the proxy runs with its event loops off
	}{
		{"h1-loop", "Http1", "Http1", nil, true, false},
		{"h1-keepalive", "Http1", "Http1", nil, false, false},
		{"h1-loop-filters", "Http1", "Http1", fault0, false, false},
		{"h1-goroutine", "Http1", "Http1", fault0, false, true},
		{"h2c-h1-direct", "Http2", "Http1", nil, false, false},
		{"h2c-h1-filters", "Http2", "Http1", fault0, false, false},
		{"h2c-h2c", "Http2", "Http2", nil, false, false},
		{"h1-h2c", "Http1", "Http2", nil, false, false},
		{"h1-h2c-fresh", "Http1", "Http2", nil, true, false},
	}
	for _, pth := range paths {
		t.Run(pth.name, func(t *testing.T) {
			t.Parallel() // each path has its own proxy and upstreams; most of it is waiting
			good := alUpstream(t)
			refusing := framework.FreePort(t)
			bad5, _ := h2cUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
					w.Header().Set("X-Up", la.String())
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			listen := framework.FreePort(t)
			logPath := filepath.Join(t.TempDir(), "access.log")
			start := framework.StartProxy
			if pth.goroutines {
				start = framework.StartProxyGoroutines
			}
			p := start(t, alConfig(listen, pth.down, pth.up, pth.filters, logPath, good, refusing, bad5))
			cases := alCases(len(pth.filters) > 0)
			var truths []alTruth
			proto := "Http1"
			if pth.down == "Http1" {
				truths = alRunH1(t, listen, cases, pth.fresh)
			} else {
				proto = "Http2"
				truths = alRunH2(t, listen, cases)
			}
			ids := []string{}
			for _, tr := range truths {
				ids = append(ids, tr.id)
			}
			got := alReadLog(t, logPath, ids)
			if t.Failed() {
				t.Logf("proxy log:\n%s", p.Logs())
			}
			alCompare(t, proto, pth.up == "Http2", truths, got)
		})
	}
}

// TestAccessLogTCPProxy: docs/config.md says access logs are written for HTTP requests
// only; a tcp_proxy listener with one starts, proxies, and writes no line.
func TestAccessLogTCPProxy(t *testing.T) {
	up := framework.EchoServer(t, "BYE")
	addr := framework.FreePort(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	var cfg map[string]any
	if err := json.Unmarshal([]byte(tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)), &cfg); err != nil {
		t.Fatal(err)
	}
	l := cfg["servers"].([]any)[0].(map[string]any)["listeners"].([]any)[0].(map[string]any)
	l["access_logs"] = []any{map[string]any{"log_path": logPath, "log_format": alFormat}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := framework.StartProxy(t, string(b))
	c := framework.Dial(t, addr)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	_ = c.Close()
	if err != nil || string(got) != "helloBYE" {
		t.Fatalf("got %q, %v", got, err)
	}
	p.Stop(5 * time.Second) // flushes the writers
	if b, err := os.ReadFile(logPath); err == nil && len(b) > 0 {
		t.Errorf("tcp_proxy wrote access log lines: %q", b)
	}
}
