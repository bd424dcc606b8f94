package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// TestH1ToH2EarlyAnswerOutlivesBodyTimeout: an HTTP/2 upstream answers before it reads
// the request body, and the HTTP/1 client stops uploading once the answer starts (curl
// does on an answer of 400 or more). The request body timeout then fires while the
// answer is still coming. The answer is the client's: it gets another body timeout to
// finish (then the connection closes, the body being incomplete); one that does not
// finish by then is cut, so a stuck upstream cannot hold the connection.
func TestH1ToH2EarlyAnswerOutlivesBodyTimeout(t *testing.T) {
	const timeout = time.Second
	const half = 64 << 10
	answer := bytes.Repeat([]byte("0123456789abcdef"), 2*half/16)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = w.Write(answer[:half])
		w.(http.Flusher).Flush()
		if r.URL.Path == "/h2/stuck" {
			select {
			case <-stuck:
			case <-r.Context().Done():
			}
			return
		}
		// Past the body timeout, within the grace after it.
		time.Sleep(timeout * 3 / 2)
		_, _ = w.Write(answer[half:])
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2,
		func(c *proxy.Config) { c.RequestBodyTimeout = timeout })
	t.Cleanup(func() { _ = o.srv.Close() })

	for _, tc := range []struct {
		path   string
		whole  bool
		within time.Duration // the connection ends by then
	}{
		{"/h2/finishes", true, 3 * timeout},
		{"/h2/stuck", false, 3 * timeout},
	} {
		t.Run(tc.path[4:], func(t *testing.T) {
			c := dial(t, e.addr)
			start := time.Now()
			_ = c.SetDeadline(start.Add(4 * timeout))
			// A 1 MiB body of which 10 KB is sent; the client then only reads.
			if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s",
				tc.path, 1<<20, bytes.Repeat([]byte("b"), 10000)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if tc.whole {
				if err != nil || !bytes.Equal(got, answer) {
					t.Fatalf("answer cut: %d of %d bytes after %v (%v)", len(got), len(answer),
						time.Since(start).Round(time.Millisecond), err)
				}
				// The body never came whole: the connection closes after the answer.
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after the answer: %v, want EOF", err)
				}
			} else if err == nil || len(got) >= len(answer) {
				t.Fatalf("stuck answer: %d bytes, err %v; want it cut", len(got), err)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || time.Since(start) > tc.within {
				t.Fatalf("connection still open after %v", time.Since(start).Round(time.Millisecond))
			}
		})
	}
}
