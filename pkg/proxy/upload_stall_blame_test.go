package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
)

// TestUploadStallBlame: who gets the blame when an upload stops. An upstream that stops
// reading the body is cut by its stall bound (the request body timeout); the rest of the
// body is then read and dropped before the answer. A client that pauses during that drain
// (under load its writes, held back while the upstream blocked the upload, resume late)
// gets the upstream's 504, not 408: the upstream stalled first and decided the outcome.
// A client that stops while the upstream reads all it gets still gets 408.
func TestUploadStallBlame(t *testing.T) {
	p := uploadPath{name: "h1-to-h2", prefix: "/h2/", h2up: true}
	t.Run("upstream_first", func(t *testing.T) { stallBlame(t, p, true) })
	t.Run("client_first", func(t *testing.T) { stallBlame(t, p, false) })
}

// stallBlame uploads to an upstream that stops reading after 64 KiB (upstreamFirst) or
// reads everything, from a client that stops writing once the upstream was cut
// (upstreamFirst) or after 256 KiB, and checks the answer: 504 upstream timeout, or 408.
func stallBlame(t *testing.T, p uploadPath, upstreamFirst bool) {
	const size = 64 << 20
	const bodyTimeout = 300 * time.Millisecond
	cut := make(chan struct{})
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if !upstreamFirst {
			_, _ = io.Copy(io.Discard, r.Body)
			return
		}
		_, _ = io.ReadFull(r.Body, make([]byte, 64<<10))
		select {
		case <-r.Context().Done(): // the proxy's stall bound cut the stream
			close(cut)
		case <-time.After(testTimeout):
		}
	})
	addr := p.start(t, routeTimeout30s, o.addr(), func(c *proxy.Config) { c.RequestBodyTimeout = bodyTimeout })

	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, "POST "+p.prefix+"up HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		piece := make([]byte, 64<<10)
		for n := 0; err == nil && n < size; n += len(piece) {
			if !upstreamFirst && n == 256<<10 {
				break // the client stops; the upstream reads what came
			}
			select {
			case <-cut:
				// The upstream was cut; the proxy drains what is buffered, then waits
				// on this client, which pauses past the body timeout.
				wrote <- nil
				return
			default:
			}
			_, err = c.Write(piece)
		}
		wrote <- err
	}()
	got := blameAnswer(t, c, wrote)
	want := `408 "request body timeout"`
	if upstreamFirst {
		want = `504 "upstream timeout"`
	}
	if got != want {
		t.Fatalf("answer %s; want %s", got, want)
	}
}

// TestUploadStallBlameH1: as TestUploadStallBlame, to an HTTP/1 upstream that reads 64 KiB
// and then nothing. The proxy's write to it runs out of time (the request body timeout),
// the rest of the body is read and dropped, and a client that pauses during that drain
// gets the upstream's 504, not 408. The client knows the cut came when a write of its,
// held back while the upstream blocked the upload, goes through after more than the body
// timeout: the proxy reads it again only once its upstream write gave up.
func TestUploadStallBlameH1(t *testing.T) {
	for _, p := range []uploadPath{
		{name: "goroutines", prefix: "/"},
		{name: "loops", loops: true, prefix: "/"},
	} {
		t.Run(p.name, func(t *testing.T) {
			const size = 64 << 20
			const bodyTimeout = 300 * time.Millisecond
			// The upstream reads 64 KiB, then nothing until the test ends.
			answered := make(chan struct{})
			t.Cleanup(func() { close(answered) })
			upstream := stallingOrigin(t, make(chan struct{}, 1), answered, make(chan error, 1))
			addr := p.start(t, routeTimeout30s, upstream, func(c *proxy.Config) { c.RequestBodyTimeout = bodyTimeout })

			c, err := net.DialTimeout("tcp", addr, testTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			wrote := make(chan error, 1)
			go func() {
				_, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
				piece := make([]byte, 16<<10)
				for n := 0; err == nil && n < size; n += len(piece) {
					start := time.Now()
					_, err = c.Write(piece)
					if err == nil && time.Since(start) > bodyTimeout {
						// Held back past the body timeout: the upstream write was cut, and the
						// proxy drains the body; this client now pauses for good.
						wrote <- nil
						return
					}
				}
				wrote <- err
			}()
			got := blameAnswer(t, c, wrote)
			if want := `504 "upstream timeout"`; got != want {
				t.Fatalf("answer %s; want %s", got, want)
			}
		})
	}
}

// blameAnswer reads the answer to the upload on c, closes c and waits for the writer
// (wrote); it returns the status and body, quoted.
func blameAnswer(t *testing.T, c net.Conn, wrote <-chan error) string {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
	if err != nil {
		_ = c.Close()
		<-wrote
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = c.Close()
	<-wrote
	return fmt.Sprintf("%d %q", resp.StatusCode, b)
}
