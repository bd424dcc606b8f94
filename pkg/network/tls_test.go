package network

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// tlsListener serves h behind TLS with a fresh CA; the client config trusts the CA.
func tlsListener(t *testing.T, h Handler, next []string, mod func(*ListenerConfig)) (*Listener, *tls.Config) {
	t.Helper()
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "127.0.0.1", "localhost")
	scfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: leaf.CertPEM, PrivateKey: leaf.KeyPEM}, nil, next, nil)
	if err != nil {
		t.Fatalf("ServerTLSConfig: %v", err)
	}
	cfg := testConfig(t, "tls", h)
	cfg.TLS = scfg
	if mod != nil {
		mod(&cfg)
	}
	return serve(t, cfg), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
}

func TestTLSListenerHandshakeAndALPN(t *testing.T) {
	t.Parallel()
	pool := buffer.NewPool()
	got := make(chan string, 8)
	h := handlerFunc(func(ctx context.Context, c *Conn) {
		st, ok := c.TLSState()
		if !ok || !st.HandshakeComplete {
			t.Errorf("handler: TLSState ok=%v complete=%v", ok, st.HandshakeComplete)
		}
		got <- c.NegotiatedProtocol()
		echo(pool).ServeConn(ctx, c)
	})
	l, ccfg := tlsListener(t, h, []string{ALPNHTTP2, ALPNHTTP11}, nil)
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
		{nil, ""},
	} {
		cc := ccfg.Clone()
		cc.NextProtos = tc.offer
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", l.Addr().String(), cc)
		if err != nil {
			t.Fatalf("offer %v: dial: %v", tc.offer, err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != tc.want {
			t.Errorf("offer %v: client negotiated %q, want %q", tc.offer, p, tc.want)
		}
		msg := strings.Repeat("tls echo;", 4000) // several records
		if r, err := roundTrip(c, msg, 5*time.Second); err != nil || r != msg {
			t.Errorf("offer %v: echo: %v (got %d bytes)", tc.offer, err, len(r))
		}
		select {
		case p := <-got:
			if p != tc.want {
				t.Errorf("offer %v: server NegotiatedProtocol %q, want %q", tc.offer, p, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("offer %v: handler did not run", tc.offer)
		}
		c.Close()
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{}, 1)
	h := handlerFunc(func(context.Context, *Conn) { ran <- struct{}{} })
	l, _ := tlsListener(t, h, nil, func(c *ListenerConfig) { c.HandshakeTimeout = 200 * time.Millisecond })
	c := dial(t, l.Addr()) // connects, never says a word
	if err := waitClosedByPeer(c, 10*time.Second); err != nil {
		t.Fatalf("silent client not closed by the handshake timeout: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "close counted as tls_handshake", func() bool {
		return closes(l.cfg.Metrics, "tls", CloseTLSHandshake) == 1
	})
	select {
	case <-ran:
		t.Fatal("handler ran for a connection that never completed the handshake")
	default:
	}
}

func TestTLSHandshakePlaintextClient(t *testing.T) {
	t.Parallel()
	h := handlerFunc(func(context.Context, *Conn) { t.Error("handler ran for a plaintext client") })
	l, _ := tlsListener(t, h, nil, nil)
	c := dial(t, l.Addr())
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := waitClosedByPeer(c, 10*time.Second); err != nil {
		t.Fatalf("plaintext client not closed: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "close counted as tls_handshake", func() bool {
		return closes(l.cfg.Metrics, "tls", CloseTLSHandshake) == 1
	})
}

func TestTLSUntrustedClientCertRefused(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "127.0.0.1")
	scfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: leaf.CertPEM, PrivateKey: leaf.KeyPEM,
		CACert: ca.PEM, VerifyClient: true}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "mtls", echo(buffer.NewPool()))
	cfg.TLS = scfg
	l := serve(t, cfg)
	d := &net.Dialer{Timeout: 5 * time.Second}
	// Without a client certificate: refused.
	c, err := tls.DialWithDialer(d, "tcp", l.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = roundTrip(c, "x", 5*time.Second) // TLS 1.3: the refusal comes after the client's handshake
		c.Close()
	}
	if err == nil {
		t.Fatal("client without a certificate was served")
	}
	// With one the CA signed: served.
	client := ca.Leaf(t, "client")
	c, err = tls.DialWithDialer(d, "tcp", l.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{client.TLS(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := roundTrip(c, "mtls", 5*time.Second); err != nil || r != "mtls" {
		t.Fatalf("echo with a client certificate: %q %v", r, err)
	}
}

func TestServerTLSConfigFromFiles(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "127.0.0.1")
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for f, s := range map[string]string{certFile: leaf.CertPEM, keyFile: leaf.KeyPEM, caFile: ca.PEM} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile, CACert: caFile,
		ALPN: "H2", MinVersion: "TLS1.2", MaxVersion: "TLS1.3", CipherSuites: "ECDHE-ECDSA-AES128-GCM-SHA256",
		EcdhCurves: "x25519,p256"}, nil, []string{"ignored"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cfg.GetCertificate(&tls.ClientHelloInfo{}); err != nil || c == nil || len(c.Certificate) == 0 {
		t.Fatalf("the certificate files are not served: %v", err) // files: reloadable, via GetCertificate
	}
	if cfg.ClientCAs == nil || cfg.MinVersion != tls.VersionTLS12 ||
		cfg.MaxVersion != tls.VersionTLS13 || len(cfg.CipherSuites) != 1 || len(cfg.CurvePreferences) != 2 {
		t.Fatalf("config not applied: %+v", cfg)
	}
	if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "h2" {
		t.Errorf("NextProtos %v: the config's alpn wins over the handler's list", cfg.NextProtos)
	}

	// Disabled: no TLS.
	if cfg, err := ServerTLSConfig(&config.TLSConfig{}, nil, nil, nil); cfg != nil || err != nil {
		t.Errorf("status false: %v %v", cfg, err)
	}
	missing := filepath.Join(dir, "nope.pem")
	for _, tc := range []struct {
		name string
		one  *config.TLSConfig
		set  []config.TLSConfig
		want []string
	}{
		{"missing file", &config.TLSConfig{Status: true, CertChain: missing, PrivateKey: keyFile},
			nil, []string{"tls_context.cert_chain", missing}},
		{"missing key", &config.TLSConfig{Status: true, CertChain: certFile}, nil, []string{"tls_context", "private_key is missing"}},
		{"key mismatch", &config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: ca.Leaf(t, "x").KeyPEM},
			nil, []string{"tls_context", certFile, "inline PEM"}},
		{"bad ca", &config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile, CACert: keyFile},
			nil, []string{"tls_context.ca_cert", "no PEM certificate"}},
		{"bad version", &config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile, MinVersion: "SSL3"},
			nil, []string{"tls_context.min_version", "SSL3"}},
		{"bad cipher", &config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile, CipherSuites: "NULL-MD5"},
			nil, []string{"tls_context.cipher_suites", "NULL-MD5"}},
		{"set entry", nil, []config.TLSConfig{{}, {Status: true, CertChain: certFile, PrivateKey: missing}},
			[]string{"tls_context_set[1].private_key", missing}},
		{"verify without ca", &config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile, VerifyClient: true},
			nil, []string{"tls_context.ca_cert", "verify_client"}},
		{"sds", &config.TLSConfig{Status: true, SDSSource: &config.RawJSON{}}, nil, []string{"tls_context.sds_source"}},
	} {
		_, err := ServerTLSConfig(tc.one, tc.set, nil, nil)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: error prints key material: %q", tc.name, err)
		}
	}
}

func TestTLSRefusedOnUDP(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "udp", nil)
	cfg.Network, cfg.PacketHandler = "udp", packetEcho{}
	cfg.TLS = &tls.Config{}
	if _, err := NewListener(cfg); err == nil || !strings.Contains(err.Error(), "tls_context") {
		t.Fatalf("udp listener with TLS: %v", err)
	}
}

func TestClientTLSConfig(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "upstream.test")
	scfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: leaf.CertPEM, PrivateKey: leaf.KeyPEM}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := serve(t, func() ListenerConfig {
		c := testConfig(t, "up", echo(buffer.NewPool()))
		c.TLS = scfg
		return c
	}())
	try := func(t *config.TLSConfig) error {
		ccfg, err := ClientTLSConfig("clusters[0].tls_context", t, nil)
		if err != nil {
			return err
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), ccfg.Config())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = roundTrip(c, "up", 5*time.Second)
		return err
	}
	if err := try(&config.TLSConfig{Status: true, ServerName: "upstream.test", CACert: ca.PEM}); err != nil {
		t.Errorf("verified: %v", err)
	}
	if err := try(&config.TLSConfig{Status: true, ServerName: "other.test", CACert: ca.PEM}); err == nil {
		t.Error("wrong server_name accepted")
	}
	if err := try(&config.TLSConfig{Status: true, InsecureSkip: true}); err != nil {
		t.Errorf("insecure_skip: %v", err)
	}
	if c, err := ClientTLSConfig("x", &config.TLSConfig{}, nil); c != nil || err != nil {
		t.Errorf("status false: %v %v", c, err)
	}
}

// BenchmarkTLSEcho1KiB is BenchmarkEcho1KiB over TLS (TLS 1.3, AES-GCM or ChaCha20): the
// listener's handshake is done once; the loop measures records both ways, client included.
func BenchmarkTLSEcho1KiB(b *testing.B) {
	ca := tlstest.NewCA(b)
	leaf := ca.Leaf(b, "127.0.0.1")
	scfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: leaf.CertPEM, PrivateKey: leaf.KeyPEM}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b, "bench", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.TLS = scfg
	l := serve(b, cfg)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(),
		&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, got := make([]byte, 1024), make([]byte, 1024)
	for range 100 {
		c.Write(msg)
		io.ReadFull(c, got)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}
