package proxy_test

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// The route timeout starts once the request has been received in full (as in MOSN and
// Envoy), on every HTTP path; the upload itself is bounded by the request body timeout,
// on the client's side and on the upstream's.

// uploadPath is one way a request with a body goes through the proxy.
type uploadPath struct {
	name   string
	h2down bool   // the client speaks HTTP/2 (prior knowledge)
	loops  bool   // HTTP/1 on event loops
	prefix string // the route: "/" (upstream HTTP/1 for HTTP/1 clients, HTTP/2 for HTTP/2 ones), "/h1/", "/h2/"
	full   bool   // HTTP/2 client: the full path (a stream filter), not the direct one
	h2up   bool   // the upstream speaks HTTP/2
	size   int
}

const uploadSmall, uploadLarge = 20 << 10, 200 << 10 // below and above the loop's 48 KiB whole-body limit

func uploadPaths() []uploadPath {
	return []uploadPath{
		{name: "h1/goroutines/small", prefix: "/", size: uploadSmall},
		{name: "h1/goroutines/large", prefix: "/", size: uploadLarge},
		{name: "h1/loops/small", loops: true, prefix: "/", size: uploadSmall},
		{name: "h1/loops/large", loops: true, prefix: "/", size: uploadLarge},
		{name: "h1-to-h2/small", prefix: "/h2/", h2up: true, size: uploadSmall},
		{name: "h1-to-h2/large", prefix: "/h2/", h2up: true, size: uploadLarge},
		{name: "h2-to-h1/direct", h2down: true, prefix: "/h1/", size: uploadLarge},
		{name: "h2-to-h1/full", h2down: true, full: true, prefix: "/h1/", size: uploadLarge},
		{name: "h2-to-h2", h2down: true, prefix: "/h2/", h2up: true, size: uploadLarge},
	}
}

// uploadRoutes routes "/h1/" and "/h2/" to cluster c over that upstream protocol, and the
// rest over the downstream's, each with the timeouts given (route JSON fields).
func uploadRoutes(timeouts string) string {
	return fmt.Sprintf(`{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/h1/"},"route":{"cluster_name":"c","upstream_protocol":"Http1",%[1]s}},
 {"match":{"prefix":"/h2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2",%[1]s}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c",%[1]s}}]}]}`, timeouts)
}

const (
	routeTimeout300ms = `"timeout":"300ms"`
	routeTimeout30s   = `"timeout":"30s"`
	// A per-try timeout of 300 ms (the route's is 30 s).
	perTryTimeout300ms = `"timeout":"30s","retry_policy":{"retry_on":true,"num_retries":1,"retry_timeout":"300ms"}`
)

// start serves the proxy for p with routes of the given timeouts (route JSON fields) to
// upstream.
func (p uploadPath) start(t *testing.T, timeouts, upstream string, opts ...func(*proxy.Config)) string {
	t.Helper()
	routes := uploadRoutes(timeouts)
	clusters := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]}]`, upstream)
	if p.full {
		// A filter that never acts: the HTTP/2 stream takes the full path.
		opts = append(opts, withFilters(t, "fault", `{"abort":{"status":503,"percentage":100},"headers":[{"name":"x-abort","value":"1"}]}`))
	}
	if p.h2down {
		return startRetryEnv(t, routes, clusters, stream.HTTP2, opts...).addr
	}
	return newTestEnvN(t, routes, clusters, "r", path{loops: p.loops}, opts...).addr
}

// trickle is a request body of len(body) bytes given in n pieces, gap apart.
type trickle struct {
	body  []byte
	piece int
	gap   time.Duration
	off   int
}

func newTrickle(body []byte, n int, gap time.Duration) *trickle {
	return &trickle{body: body, piece: (len(body) + n - 1) / n, gap: gap}
}

func (r *trickle) Read(b []byte) (int, error) {
	if r.off == len(r.body) {
		return 0, io.EOF
	}
	if r.off > 0 && r.off%r.piece == 0 {
		time.Sleep(r.gap) // before each piece but the first
	}
	end := min(len(r.body), (r.off/r.piece+1)*r.piece, r.off+len(b))
	n := copy(b, r.body[r.off:end])
	r.off += n
	return n, nil
}

// upload sends a POST to addr on p with body from src (of length n) and returns the
// answer's status and body; err: no answer (the connection or stream ended without one).
// It may run on any goroutine: every wait is bounded by testTimeout.
func (p uploadPath) upload(addr string, src io.Reader, n int) (int, []byte, error) {
	target := p.prefix + "up"
	if p.h2down {
		req, err := http.NewRequest("POST", "http://"+addr+target, src)
		if err != nil {
			return 0, nil, err
		}
		req.ContentLength = int64(n)
		tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: testTimeout}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, "POST "+target+" HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
		if err == nil {
			_, err = io.Copy(c, src)
		}
		done <- err
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
	if err != nil {
		_ = c.Close()
		<-done
		return 0, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	<-done // the writer ends: the body is written, or the connection failed
	return resp.StatusCode, b, err
}

// onPaths runs check for every path in paths at once (they mostly wait), each on a proxy
// set up for it by setup on the test's goroutine; a non-nil error fails the test.
func onPaths(t *testing.T, paths []uploadPath, setup func(p uploadPath) (check func() error)) {
	t.Helper()
	errs := make([]chan error, len(paths))
	for i, p := range paths {
		check := setup(p)
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- check() }()
	}
	for i, p := range paths {
		if err := <-errs[i]; err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}

// TestUploadSlowerThanRouteTimeout: an upload that takes three times the route timeout
// (300 ms), making progress all along, is forwarded and answered on every path: the
// route timeout starts once the request is in, and the gaps between the pieces are
// within the request body timeout. So does the first try's per-try timeout
// (retry_timeout 300 ms).
func TestUploadSlowerThanRouteTimeout(t *testing.T) {
	t.Run("route_timeout", func(t *testing.T) { slowUpload(t, routeTimeout300ms) })
	t.Run("per_try_timeout", func(t *testing.T) { slowUpload(t, perTryTimeout300ms) })
}

func slowUpload(t *testing.T, timeouts string) {
	onPaths(t, uploadPaths(), func(p uploadPath) func() error {
		o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		})
		addr := p.start(t, timeouts, o.addr())
		return func() error {
			body := randomBody(p.size)
			status, got, err := p.upload(addr, newTrickle(body, 10, 100*time.Millisecond), len(body))
			if err != nil || status != 200 || !bytes.Equal(got, body) {
				return fmt.Errorf("slow upload: %d, %d of %d bytes echoed, %v; want 200 and the body", status, len(got), len(body), err)
			}
			return nil
		}
	})
}

// TestRouteTimeoutAfterUpload: once a slow upload is in, the route timeout (300 ms)
// bounds the wait for the response head: an upstream that read the whole body and does
// not answer gets the client a 504.
func TestRouteTimeoutAfterUpload(t *testing.T) {
	onPaths(t, uploadPaths(), func(p uploadPath) func() error {
		read := make(chan int, 1)
		o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			read <- len(b)
			select {
			case <-r.Context().Done():
			case <-time.After(testTimeout):
			}
		})
		addr := p.start(t, routeTimeout300ms, o.addr())
		return func() error {
			body := randomBody(p.size)
			status, got, err := p.upload(addr, newTrickle(body, 10, 100*time.Millisecond), len(body))
			if err != nil || status != http.StatusGatewayTimeout || string(got) != "upstream timeout" {
				return fmt.Errorf("answer: %d %q %v; want 504 upstream timeout", status, got, err)
			}
			select {
			case n := <-read:
				if n != len(body) {
					return fmt.Errorf("the upstream read %d of %d body bytes", n, len(body))
				}
			default:
				return fmt.Errorf("the upstream never read the whole body: the upload was cut")
			}
			return nil
		}
	})
}

// TestUploadStalledUpstream: an upstream that stops reading the request body mid-upload
// is cut after the request body timeout (300 ms; the route timeout is 30 s and has not
// started): the client gets 504 (or, where the proxy cannot wait for the rest of the
// body, its connection or stream ends) and the upstream connection or stream is closed,
// well within the test's bound.
func TestUploadStalledUpstream(t *testing.T) {
	const size = 64 << 20 // more than the sockets' and the streams' buffers hold
	var paths []uploadPath
	for _, p := range uploadPaths() {
		if p.size != uploadSmall {
			paths = append(paths, p)
		}
	}
	onPaths(t, paths, func(p uploadPath) func() error {
		stalled := make(chan struct{}, 1)
		cut := make(chan error, 1)
		answered := make(chan struct{})
		var upstream string
		if p.h2up {
			o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadFull(r.Body, make([]byte, 64<<10))
				stalled <- struct{}{}
				select {
				case <-r.Context().Done():
					cut <- nil
				case <-time.After(testTimeout):
					cut <- fmt.Errorf("the upstream stream is still open")
				}
			})
			upstream = o.addr()
		} else {
			upstream = stallingOrigin(t, stalled, answered, cut)
		}
		addr := p.start(t, routeTimeout30s, upstream, func(c *proxy.Config) { c.RequestBodyTimeout = 300 * time.Millisecond })
		return func() error {
			res := make(chan string, 1)
			go func() {
				status, got, err := p.upload(addr, io.LimitReader(zeros{}, size), size)
				res <- fmt.Sprintf("%d %q %v", status, got, err)
			}()
			select {
			case <-stalled:
			case <-time.After(testTimeout):
				close(answered)
				return fmt.Errorf("the upstream got no request")
			}
			select {
			case r := <-res:
				t.Logf("%s: %s", p.name, r)
				if r != `504 "upstream timeout" <nil>` && r[:2] != "0 " {
					return fmt.Errorf("stalled upload: %s; want 504 upstream timeout, or no answer", r)
				}
			case <-time.After(testTimeout / 2):
				close(answered)
				return fmt.Errorf("the stalled upload still holds the client")
			}
			close(answered)
			return <-cut
		}
	})
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// stallingOrigin is an HTTP/1 upstream that reads a request's head and 64 KiB, then stops
// reading (stalled is sent) until the client has its answer (answered closes), and then
// reports on cut whether the proxy closed the connection (read to its end within the
// test's bound).
func stallingOrigin(t *testing.T, stalled chan<- struct{}, answered <-chan struct{}, cut chan<- error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		_, _ = io.ReadFull(c, make([]byte, 64<<10))
		stalled <- struct{}{}
		select { // nothing is read meanwhile
		case <-answered:
		case <-time.After(testTimeout):
		}
		_, err = io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			cut <- fmt.Errorf("the upstream connection is still open")
			return
		}
		cut <- nil
	}()
	return ln.Addr().String()
}
