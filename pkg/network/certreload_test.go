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
	old := certCheckInterval
	certCheckInterval = 0 // check on every handshake
	t.Cleanup(func() { certCheckInterval = old })
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(p tlstest.Pair, at time.Time) {
		t.Helper()
		for f, v := range map[string]string{certFile: p.CertPEM, keyFile: p.KeyPEM} {
			if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f, at, at); err != nil { // a stamp that surely differs
				t.Fatal(err)
			}
		}
	}
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
