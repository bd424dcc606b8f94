package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestHTTP1Drain: on shutdown an HTTP/1 listener, on goroutines and on event loops,
// answers with "Connection: close" from the start of the drain delay, while it still
// accepts: a connection made during the delay is served once and closed. When it stops
// accepting, it closes a keep-alive connection that is between requests at once (the
// drain does not wait for its client); the request in flight, and the first request of a
// connection opened before the drain, are answered with "Connection: close" and their
// connections closed; and the access log still gets the lines of the requests that
// finished during the drain (ROBUSTNESS 43).
func TestHTTP1Drain(t *testing.T) {
	for _, loops := range []bool{false, true} {
		t.Run(map[bool]string{false: "goroutines", true: "loops"}[loops], func(t *testing.T) {
			if loops && !evloop.Supported {
				t.Skip("no event loops on this platform")
			}
			http1Drain(t, loops)
		})
	}
}

func http1Drain(t *testing.T, loops bool) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	origin := srv.Listener.Addr().String()
	logPath := filepath.Join(t.TempDir(), "access.log")
	js := fmt.Sprintf(`{
	  "servers":[{"listeners":[{"name":"h","address":"127.0.0.1:0",
	    "access_logs":[{"log_path":%q,"log_format":"%%x-mosn-path%% %%response_code%%"}],
	    "filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}],
	   "routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],
	    "routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"up"}}]}]}]}],
	  "cluster_manager":{"clusters":[{"name":"up","hosts":[{"address":%q}]}]},
	  "drain":{"delay":"2s","timeout":"60s"}}`, logPath, origin)
	s := newServer(t, parseConfig(t, js), func(o *Options) { o.NoEventLoops = !loops })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-release:
		default:
			close(release)
		}
		<-errc
	})
	testutil.Eventually(t, 10*time.Second, "ready", s.Ready)
	addr := s.Addrs()["h"].String()
	open := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	request := func(c net.Conn, path string) {
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	response := func(br *bufio.Reader, path string) *http.Response {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(body) != "ok "+path {
			t.Fatalf("%s: %d %q %v", path, resp.StatusCode, body, err)
		}
		return resp
	}

	idle, idleR := open()
	request(idle, "/first")
	if resp := response(idleR, "/first"); resp.Close {
		t.Fatal("keep-alive answer carries Connection: close before the drain")
	}
	busy, busyR := open()
	request(busy, "/slow")
	<-arrived
	fresh, freshR := open() // connected, no request yet

	cancel() // SIGTERM
	testutil.Eventually(t, 10*time.Second, "readiness off", func() bool { return !s.Ready() })
	// During the delay the listener accepts, and answers with Connection: close.
	late, lateR := open()
	request(late, "/late")
	if resp := response(lateR, "/late"); !resp.Close {
		t.Error("an answer during the drain delay lacks Connection: close")
	}
	if n, err := lateR.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after an answer during the drain delay: read %d, %v; want EOF", n, err)
	}
	// The idle connection is closed by the drain, without waiting for its client.
	if n, err := idleR.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle keep-alive connection during the drain: read %d, %v; want EOF", n, err)
	}
	// A connection that had sent no request yet is served, once.
	request(fresh, "/fresh")
	if resp := response(freshR, "/fresh"); !resp.Close {
		t.Error("the answer on a fresh connection during the drain lacks Connection: close")
	}
	if n, err := freshR.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("fresh connection after its answer during the drain: read %d, %v; want EOF", n, err)
	}
	// The request in flight is answered, with Connection: close, then its connection ends.
	close(release)
	if resp := response(busyR, "/slow"); !resp.Close {
		t.Error("the answer during the drain lacks Connection: close")
	}
	if n, err := busyR.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the answer during the drain: read %d, %v; want EOF", n, err)
	}
	select {
	case err := <-errc:
		errc <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return once the connections ended (drain timeout 60s)")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines) // the writer's shards may reorder lines
	if want := []string{"/first 200", "/fresh 200", "/late 200", "/slow 200"}; !slices.Equal(lines, want) {
		t.Fatalf("access log %q; want the lines of /first, and of /late, /fresh and /slow (which ended during the drain)", b)
	}
}
