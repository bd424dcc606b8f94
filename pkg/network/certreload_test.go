package network

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
)

// serial is the serial number of the leaf a pair holds.
func serial(t *testing.T, p tlstest.Pair) *big.Int {
	t.Helper()
	c := p.TLS(t)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber
}

// rotation makes every handshake check certificate files, and returns a certificate and
// a key path in a new directory, and a writer of pairs to them. Each write is stamped as
// given (a stamp that surely differs from the previous one, whatever the file system's
// time resolution).
func rotation(t *testing.T) (certFile, keyFile string, write func(p tlstest.Pair, at time.Time)) {
	old := certCheckInterval
	certCheckInterval = 0
	t.Cleanup(func() { certCheckInterval = old })
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	return certFile, keyFile, func(p tlstest.Pair, at time.Time) {
		t.Helper()
		for f, v := range map[string]string{certFile: p.CertPEM, keyFile: p.KeyPEM} {
			if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// served runs a real handshake against cfg and returns the serial number of the
// certificate the server presented.
func served(t *testing.T, cfg *tls.Config, ca *tlstest.CA) *big.Int {
	t.Helper()
	c, s := tcpPair(t)
	errc := make(chan error, 1)
	go func() {
		sc := tls.Server(s, cfg)
		_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
		errc <- sc.Handshake()
	}()
	cc := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test"})
	_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := cc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return cc.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestServerCertReloadsFromFiles: a listener whose cert_chain and private_key are files
// serves a new pair once the files change (rotation), keeps serving the last good pair
// when the new files do not load, and logs both.
func TestServerCertReloadsFromFiles(t *testing.T) {
	certFile, keyFile, write := rotation(t)
	ca := tlstest.NewCA(t)
	first, second := ca.Leaf(t, "a.test"), ca.Leaf(t, "a.test")
	start := time.Now().Add(-time.Hour)
	write(first, start)
	core, logs := observer.New(zap.InfoLevel)
	cfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: certFile, PrivateKey: keyFile}, nil, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, cfg, ca); got.Cmp(serial(t, first)) != 0 {
		t.Fatal("the first pair is not served")
	}
	write(second, start.Add(time.Minute))
	if got := served(t, cfg, ca); got.Cmp(serial(t, second)) != 0 {
		t.Fatal("the rotated pair is not served")
	}
	if logs.FilterMessage("tls certificate reloaded").Len() != 1 {
		t.Fatal("no reload logged")
	}
	// A broken rotation: the new key does not match the certificate.
	third := ca.Leaf(t, "a.test")
	write(tlstest.Pair{CertPEM: third.CertPEM, KeyPEM: first.KeyPEM}, start.Add(2*time.Minute))
	if got := served(t, cfg, ca); got.Cmp(serial(t, second)) != 0 {
		t.Fatal("a pair that failed to load replaced the last good one")
	}
	if logs.FilterMessage("tls certificate reload failed; serving the previous one").Len() != 1 {
		t.Fatal("the failed reload was not logged")
	}
}

// TestServerCertFilesAndSNI: with a file pair and an inline pair in tls_context_set, the
// certificate is still chosen by SNI.
func TestServerCertFilesAndSNI(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	a, b := ca.Leaf(t, "a.test"), ca.Leaf(t, "b.test")
	certFile, keyFile := filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")
	if err := os.WriteFile(certFile, []byte(b.CertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(b.KeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerTLSConfig(nil, []config.TLSConfig{
		{Status: true, CertChain: a.CertPEM, PrivateKey: a.KeyPEM},
		{Status: true, CertChain: certFile, PrivateKey: keyFile},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]tlstest.Pair{"a.test": a, "b.test": b} {
		c, s := tcpPair(t)
		go func() {
			sc := tls.Server(s, cfg)
			_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
			_ = sc.Handshake()
		}()
		cc := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: name})
		_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := cc.Handshake(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := cc.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(serial(t, want)) != 0 {
			t.Fatalf("%s: served another certificate", name)
		}
	}
}

// TestClientCertReloadsFromFiles: an upstream client certificate given as files is
// reloaded when the files change: the next handshake presents the new one.
func TestClientCertReloadsFromFiles(t *testing.T) {
	certFile, keyFile, write := rotation(t)
	ca := tlstest.NewCA(t)
	server := ca.Leaf(t, "up.test")
	first, second := ca.Leaf(t, "client"), ca.Leaf(t, "client")
	start := time.Now().Add(-time.Hour)
	write(first, start)
	ccfg, err := ClientTLSConfig("tls_context", &config.TLSConfig{Status: true, ServerName: "up.test", CACert: ca.PEM,
		CertChain: certFile, PrivateKey: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	scfg := &tls.Config{Certificates: []tls.Certificate{server.TLS(t)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	presented := func() *big.Int {
		t.Helper()
		c, s := tcpPair(t)
		got := make(chan *big.Int, 1)
		go func() {
			sc := tls.Server(s, scfg)
			_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
			if sc.Handshake() != nil || len(sc.ConnectionState().PeerCertificates) == 0 {
				got <- nil
				return
			}
			got <- sc.ConnectionState().PeerCertificates[0].SerialNumber
		}()
		cc := tls.Client(c, ccfg.Config())
		_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := cc.Handshake(); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		// TLS 1.3: the server checks the client's certificate after the client's side ended.
		_, _ = cc.Write([]byte("x"))
		n := <-got
		if n == nil {
			t.Fatal("the server saw no valid client certificate")
		}
		return n
	}
	if got := presented(); got.Cmp(serial(t, first)) != 0 {
		t.Fatal("the first client certificate is not presented")
	}
	write(second, start.Add(time.Minute))
	if got := presented(); got.Cmp(serial(t, second)) != 0 {
		t.Fatal("the rotated client certificate is not presented")
	}
}

// caRotation is rotation for a ca_cert file: write replaces the bundle and stamps it
// with at.
func caRotation(t *testing.T) (caFile string, write func(pem string, at time.Time)) {
	old := certCheckInterval
	certCheckInterval = 0
	t.Cleanup(func() { certCheckInterval = old })
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	return caFile, func(pem string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(caFile, []byte(pem), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(caFile, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientCAReloadsFromFile: an upstream ca_cert given as a file is reloaded when it
// changes: an upstream signed by a CA added to the file is trusted from the next
// handshake, one whose CA left it is not, and a bundle that fails to load keeps the last
// good one.
func TestClientCAReloadsFromFile(t *testing.T) {
	caFile, write := caRotation(t)
	oldCA, newCA := tlstest.NewCA(t), tlstest.NewCA(t)
	server := newCA.Leaf(t, "up.test")
	scfg := &tls.Config{Certificates: []tls.Certificate{server.TLS(t)}}
	start := time.Now().Add(-time.Hour)
	write(oldCA.PEM, start)
	core, logs := observer.New(zap.InfoLevel)
	ct, err := ClientTLSConfig("tls_context", &config.TLSConfig{Status: true, ServerName: "up.test", CACert: caFile}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func() error {
		t.Helper()
		c, s := tcpPair(t)
		go func() {
			sc := tls.Server(s, scfg)
			_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
			_ = sc.Handshake()
		}()
		cc := tls.Client(c, ct.Config())
		_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
		return cc.Handshake()
	}
	if err := handshake(); err == nil {
		t.Fatal("an upstream signed by a CA not in the bundle was trusted")
	}
	write(newCA.PEM, start.Add(time.Minute))
	if err := handshake(); err != nil {
		t.Fatalf("after the bundle gained the upstream's CA: %v", err)
	}
	if logs.FilterMessage("tls ca_cert reloaded").Len() != 1 {
		t.Fatal("no reload logged")
	}
	write("not a certificate", start.Add(2*time.Minute))
	if err := handshake(); err != nil {
		t.Fatalf("a bundle that failed to load replaced the last good one: %v", err)
	}
	if logs.FilterMessage("tls ca_cert reload failed; serving the previous one").Len() != 1 {
		t.Fatal("the failed reload was not logged")
	}
	write(oldCA.PEM, start.Add(3*time.Minute))
	if err := handshake(); err == nil {
		t.Fatal("the upstream is still trusted after its CA left the bundle")
	}
}

// TestServerClientCAReloadsFromFile: a listener's ca_cert file (verify_client) is
// reloaded when it changes: a client certificate from a CA added to the file is
// accepted from the next handshake, and one whose CA left it is refused.
func TestServerClientCAReloadsFromFile(t *testing.T) {
	caFile, write := caRotation(t)
	serverCA, oldCA, newCA := tlstest.NewCA(t), tlstest.NewCA(t), tlstest.NewCA(t)
	leaf := serverCA.Leaf(t, "proxy.test")
	client := newCA.Leaf(t, "client")
	start := time.Now().Add(-time.Hour)
	write(oldCA.PEM, start)
	scfg, err := ServerTLSConfig(&config.TLSConfig{Status: true, CertChain: leaf.CertPEM, PrivateKey: leaf.KeyPEM,
		VerifyClient: true, CACert: caFile}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := &tls.Config{ServerName: "proxy.test", RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{client.TLS(t)}}
	accepted := func() bool {
		t.Helper()
		c, s := tcpPair(t)
		res := make(chan error, 1)
		go func() {
			sc := tls.Server(s, scfg)
			_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
			res <- sc.Handshake()
		}()
		cc := tls.Client(c, ccfg)
		_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
		_ = cc.Handshake()
		_, _ = cc.Write([]byte("x")) // TLS 1.3: the server verifies after the client's side ended
		return <-res == nil
	}
	if accepted() {
		t.Fatal("a client certificate from a CA not in the bundle was accepted")
	}
	write(newCA.PEM, start.Add(time.Minute))
	if !accepted() {
		t.Fatal("after the bundle gained the client's CA, its certificate was refused")
	}
	write(oldCA.PEM, start.Add(2*time.Minute))
	if accepted() {
		t.Fatal("the client certificate is still accepted after its CA left the bundle")
	}
}
