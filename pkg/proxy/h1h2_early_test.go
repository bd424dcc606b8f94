package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// TestH1ToH2EarlyAnswerWithHooks: an HTTP/2 upstream answers 1 MiB before it reads a
// 4 MiB request body and reads no more of it meanwhile. The proxy writes the answer
// while the body is still arriving (h2conv.go h2Early), here with stream filters that
// see the body (payload_limit counts it) and the answer (header_mutation) and an access
// log, so that -race checks how the two goroutines share the request's state. The rest
// of the body is dropped, the connection serves the next request, and each request is
// logged once.
func TestH1ToH2EarlyAnswerWithHooks(t *testing.T) {
	const up, down = 4 << 20, 1 << 20
	answer := bytes.Repeat([]byte("early answer "), down/13+1)[:down]
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/h2/early" {
			w.Header().Set("Content-Length", strconv.Itoa(down))
			_, _ = w.Write(answer)
			return
		}
		h2echo(w, r)
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2,
		withAccessLog(t, logPath, "%response_code% %response_flag% %x-mosn-path%"),
		withFilters(t, "payload_limit", `{"max_entity_size":67108864}`,
			"header_mutation", `{"response_headers_to_add":[{"header":{"key":"x-b","value":"2"}}]}`))
	// The origin closes first at cleanup: a proxy stream stuck on the upload (the bug)
	// then ends, and so does the proxy.
	t.Cleanup(func() { _ = o.srv.Close() })
	body := bytes.Repeat([]byte("b"), up)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			c := dial(t, e.addr)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(8 * time.Second))
			var req bytes.Buffer
			if chunked {
				req.WriteString("POST /h2/early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
				for rest := body; len(rest) > 0; rest = rest[min(len(rest), 10000):] {
					fmt.Fprintf(&req, "%x\r\n%s\r\n", min(len(rest), 10000), rest[:min(len(rest), 10000)])
				}
				req.WriteString("0\r\n\r\n")
			} else {
				fmt.Fprintf(&req, "POST /h2/early HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", up, body)
			}
			req.WriteString("GET /h2/next HTTP/1.1\r\nHost: a\r\n\r\n")
			werr := make(chan error, 1)
			go func() { _, err := c.Write(req.Bytes()); werr <- err }()
			br := bufio.NewReader(c)
			resp, got := readResp(t, br, http.MethodPost)
			if resp.StatusCode != 200 || resp.Close || resp.Header.Get("X-B") != "2" || got != string(answer) {
				t.Fatalf("early answer: status %d, close %v, X-B %q, %d bytes (want %d)",
					resp.StatusCode, resp.Close, resp.Header.Get("X-B"), len(got), down)
			}
			resp, got = readResp(t, br, http.MethodGet)
			if resp.StatusCode != 200 || got != "GET /h2/next " {
				t.Fatalf("next request: status %d %q", resp.StatusCode, got)
			}
			if err := <-werr; err != nil {
				t.Fatalf("writing the requests: %v", err)
			}
		})
	}
	if t.Failed() {
		return
	}
	lines := logLines(t, e.h.(*proxy.Proxy).AccessLog().Flush, logPath, 4)
	if n := strings.Count(strings.Join(lines, "\n"), "200 - /h2/early"); len(lines) != 4 || n != 2 {
		t.Fatalf("access log, want 2 early answers and 2 next requests logged once each:\n%s", strings.Join(lines, "\n"))
	}
}
