package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCloseAfterAnswerLingers: a client asks for the connection to close and keeps
// sending after its request (1 MiB more than the proxy reads). The proxy's answer (4 MiB,
// much of it still in the socket's send queue when the proxy is done) must arrive whole
// with a clean end: closing with bytes unread would reset the connection and the kernel
// would drop what was not sent yet. The proxy shuts its write side, reads and drops the
// rest, and closes once the client does.
func TestCloseAfterAnswerLingers(t *testing.T) { bothPaths(t, closeAfterAnswerLingers) }

func closeAfterAnswerLingers(t *testing.T, p path) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) })
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	sent := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"+strings.Repeat("x", 1<<20))
		sent <- err
	}()
	time.Sleep(200 * time.Millisecond) // the answer fills the sockets; the client reads late
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, big) {
		t.Fatalf("answer: %d of %d bytes, %v", len(body), len(big), err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want EOF", err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case <-sent:
	case <-time.After(testTimeout):
		t.Fatal("the client's writes were not taken")
	}
}
