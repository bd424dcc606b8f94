package proxy_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// TestH2EmptyUploadEndsWhileHeadIsBuilt: an upload whose HEADERS do not end the stream
// and whose empty DATA frame does, arriving just after the direct HTTP/2 → HTTP/1 path
// asked whether the request has a body, reaches the upstream as a complete request. The
// head and the body sent after it must follow the same answer: a head framed as chunked
// with no last chunk behind it left the upstream waiting for the body's end.
func TestH2EmptyUploadEndsWhileHeadIsBuilt(t *testing.T) {
	end := make(chan struct{}, 1)
	ended := make(chan bool, 1)
	restore := proxy.SetBodyDecided(func(st *h2stream.ServerStream) {
		end <- struct{}{} // the client now ends the body
		deadline := time.Now().Add(2 * time.Second)
		for st.HasBody() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		ended <- !st.HasBody()
	})
	t.Cleanup(restore) // registered first: runs after the proxy has closed
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Len", string(rune('0'+min(len(b), 9))))
		w.WriteHeader(http.StatusOK)
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	c := &http.Client{Transport: h2cTransport(t), Timeout: 5 * time.Second}
	for range 3 {
		pr, pw := io.Pipe()
		go func() {
			select {
			case <-end:
			case <-time.After(5 * time.Second):
			}
			_ = pw.Close() // the transport sends an empty DATA frame with END_STREAM
		}()
		req, err := http.NewRequest("POST", "http://"+e.addr+"/h1/upload", pr)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("empty streamed upload: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Len") != "0" {
			t.Fatalf("empty streamed upload: %d, X-Len %q", resp.StatusCode, resp.Header.Get("X-Len"))
		}
		select {
		case ok := <-ended:
			if !ok {
				t.Fatal("the stream's end did not arrive while the head was built")
			}
		default:
			t.Fatal("the direct path did not serve the request")
		}
	}
}
