package network

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
)

// childEnv marks a re-executed test binary (EMFILE and netns tests).
const childEnv = "MOSNLITE_NETWORK_TEST_CHILD"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type handlerFunc func(ctx context.Context, c *Conn)

func (f handlerFunc) ServeConn(ctx context.Context, c *Conn) { f(ctx, c) }

// echo writes back every byte it reads, through ReadLoop and Write.
func echo(pool *buffer.Pool) Handler {
	return handlerFunc(func(_ context.Context, c *Conn) {
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			out := pool.NewBuffer(b.Len())
			out.Write(b.Bytes())
			b.Drain(b.Len())
			return c.Write(out)
		})
		c.Close(CloseRemote)
	})
}

// serve starts l.Serve; cleanup cancels it, checks it returned nil and drains with an
// already-expired context (force close).
func serve(t testing.TB, cfg ListenerConfig) *Listener {
	t.Helper()
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatalf("NewListener: %v", err)
	}
	startServing(t, l)
	return l
}

// startServing runs l.Serve until the test's cleanup.
func startServing(t testing.TB, l *Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
		dctx, dcancel := context.WithCancel(context.Background())
		dcancel()
		l.Drain(dctx)
	})
}

func testConfig(t testing.TB, name string, h Handler) ListenerConfig {
	return ListenerConfig{
		Name:     name,
		Network:  "tcp",
		Address:  "127.0.0.1:0",
		BindPort: true,
		Conn:     ConnOptions{Pool: buffer.NewPool()},
		Handler:  h,
		Metrics:  metrics.New(),
		Log:      zaptest.NewLogger(t),
	}
}

func dial(t testing.TB, a net.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(a.Network(), a.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v: %v", a, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return string(got), err
}

// waitClosedByPeer reads until EOF or reset within d.
func waitClosedByPeer(c net.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil // EOF or reset: closed
}

func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

func closes(s *metrics.Set, listener string, r CloseReason) float64 {
	return value(s.ConnCloses.WithLabelValues(listener, string(r)))
}

// serveTest builds a listener from cfg and runs Serve on a goroutine; cancel stops it
// and errc receives what Serve returned.
func serveTest(t *testing.T, cfg ListenerConfig) (l *Listener, cancel context.CancelFunc, errc chan error) {
	t.Helper()
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc = make(chan error, 1)
	go func() { errc <- l.Serve(ctx) }()
	return l, cancel, errc
}
