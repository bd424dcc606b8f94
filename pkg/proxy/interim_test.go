package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestInterimAnswersForwarded: an upstream's 103 Early Hints reach an HTTP/1.1 client
// before the final answer, with their fields and without hop-by-hop ones (RFC 9110
// §15.2); an HTTP/1.0 client gets the final answer only.
func TestInterimAnswersForwarded(t *testing.T) { bothPaths(t, interimAnswersForwarded) }

func interimAnswersForwarded(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "final")
	})
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c, "GET /hints HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	hints, err := http.ReadResponse(br, nil)
	if err != nil || hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") != "</a.css>; rel=preload" ||
		hints.Header.Get("Connection") != "" {
		t.Fatalf("first answer: %v %v; want 103 with its Link field", hints, err)
	}
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 200 || body != "final" {
		t.Fatalf("final answer: %d %q", resp.StatusCode, body)
	}
	// HTTP/1.0: no 1xx.
	c10 := dial(t, e.addr)
	_ = c10.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c10, "GET /hints HTTP/1.0\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResp(t, bufio.NewReader(c10), "GET"); resp.StatusCode != 200 || body != "final" {
		t.Fatalf("HTTP/1.0 client: %d %q; want the final answer only", resp.StatusCode, body)
	}
}
