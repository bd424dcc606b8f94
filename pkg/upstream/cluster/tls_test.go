package cluster_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// tlsEcho serves an echo over TLS with cert; silent makes it accept and never answer.
func tlsEcho(t *testing.T, cert tls.Certificate, silent bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if silent {
				continue
			}
			wg.Go(func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				_, _ = io.Copy(tc, tc)
				tc.Close()
			})
		}
	})
	return ln.Addr().String()
}

func TestUpstreamTLS(t *testing.T) {
	ca := tlstest.NewCA(t)
	cert := ca.Leaf(t, "127.0.0.1", "up.test").TLS(t)
	addr := tlsEcho(t, cert, false)
	silent := tlsEcho(t, cert, true)
	other := tlstest.NewCA(t)
	m, _ := newManager(t, cluster.Options{})
	mk := func(name, addr string, tc *config.TLSConfig) config.Cluster {
		c := simple(name, "", addr)
		c.TLSContext = tc
		c.MaxConnectAttempts = 1
		c.ConnectTimeout = dur(500 * time.Millisecond)
		return c
	}
	if err := m.Apply([]config.Cluster{
		mk("ok", addr, &config.TLSConfig{Status: true, CACert: ca.PEM}),
		mk("sni", addr, &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "up.test"}),
		mk("skip", addr, &config.TLSConfig{Status: true, InsecureSkip: true}),
		mk("untrusted", addr, &config.TLSConfig{Status: true, CACert: other.PEM}),
		mk("wrongname", addr, &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "nope.test"}),
		mk("silent", silent, &config.TLSConfig{Status: true, CACert: ca.PEM}),
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"ok", "sni", "skip"} {
		conn, _, done, err := get(t, m, name).Dial(ctx, &lb.Request{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, ok := conn.(*tls.Conn); !ok {
			t.Errorf("%s: Dial returned %T, want *tls.Conn", name, conn)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Errorf("%s: echo %q %v", name, buf, err)
		}
		conn.Close()
		done(lb.DoneInfo{})
	}
	for _, name := range []string{"untrusted", "wrongname", "silent"} {
		_, _, _, err := get(t, m, name).Dial(ctx, &lb.Request{})
		if err == nil || !strings.Contains(err.Error(), "tls handshake") {
			t.Errorf("%s: Dial error %v, want a tls handshake failure", name, err)
		}
	}
	// A bad tls_context is refused when the cluster is applied.
	err := m.Apply([]config.Cluster{mk("bad", addr, &config.TLSConfig{Status: true, CACert: "/nonexistent/ca.pem"})})
	if err == nil || !strings.Contains(err.Error(), "tls_context.ca_cert") || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Errorf("bad ca_cert: %v", err)
	}
}
