package network

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log"
)

// DefaultHandshakeTimeout bounds a downstream TLS handshake when
// ListenerConfig.HandshakeTimeout is 0.
const DefaultHandshakeTimeout = 10 * time.Second

// CloseTLSHandshake is the close reason of a connection whose TLS handshake failed or
// timed out.
const CloseTLSHandshake CloseReason = "tls_handshake"

// ALPN protocol IDs of the HTTP versions.
const (
	ALPNHTTP2  = "h2"
	ALPNHTTP11 = "http/1.1"
)

// NextProtoser is implemented by connection handlers that choose the protocol by ALPN: the
// list is what a TLS listener advertises when its config names none.
type NextProtoser interface {
	NextProtos() []string
}

// TLSState is the connection's TLS state (the handshake has completed once the handler
// runs); ok is false for a plain connection.
func (c *Conn) TLSState() (st tls.ConnectionState, ok bool) {
	tc, ok := c.raw.(*tls.Conn)
	if !ok {
		return st, false
	}
	return tc.ConnectionState(), true
}

// NegotiatedProtocol is the protocol agreed by ALPN in the TLS handshake: "" for a plain
// connection or when the client offered none the listener advertises.
func (c *Conn) NegotiatedProtocol() string {
	tc, ok := c.raw.(*tls.Conn)
	if !ok {
		return ""
	}
	return tc.ConnectionState().NegotiatedProtocol
}

// wrapTLS wraps an accepted socket in a server-side TLS connection when the listener
// terminates TLS. The handshake runs later, on the connection's goroutine (handshake).
func (l *Listener) wrapTLS(raw net.Conn) net.Conn {
	if l.cfg.TLS == nil {
		return raw
	}
	return tls.Server(raw, l.cfg.TLS)
}

// validateTLS refuses a TLS config on a packet listener.
func (l *Listener) validateTLS() error {
	if l.cfg.TLS != nil && !l.isTCP() && l.network != "unix" {
		return errNotTLSNetwork
	}
	return nil
}

// handshake runs the TLS handshake of a listener's connection, bounded by the handshake
// timeout (and by the connection closing, which interrupts it). On failure the connection
// is closed (reason tls_handshake) and handshake returns false. Plain connections pass.
func (l *Listener) handshake(c *Conn) bool {
	tc, ok := c.raw.(*tls.Conn)
	if !ok {
		return true
	}
	d := l.cfg.HandshakeTimeout
	if d <= 0 {
		d = DefaultHandshakeTimeout
	}
	_ = tc.SetDeadline(time.Now().Add(d))
	err := tc.Handshake()
	_ = tc.SetDeadline(time.Time{})
	if err != nil {
		if ce := l.log.Check(zap.DebugLevel, "tls handshake failed; connection closed"); ce != nil {
			ce.Write(zap.Uint64(log.FieldConnID, c.id), zap.Stringer(log.FieldRemote, c.RemoteAddr()), zap.Error(err))
		}
		c.Close(CloseTLSHandshake)
		return false
	}
	c.Touch()
	return true
}

// ServerTLSConfig builds a listener's TLS config from a filter chain's tls_context (and
// tls_context_set: every entry's certificate is served, chosen by SNI; the other settings
// come from the first enabled entry). It returns nil when no entry has status true. Errors
// name the field at fault, relative to the filter chain ("tls_context.cert_chain: ...").
//
// As in MOSN, cert_chain, private_key and ca_cert hold PEM text when they contain
// "-----BEGIN", file paths otherwise. The ALPN list is the config's alpn (comma-separated)
// or, when it is empty, next (the handler's choice, see NextProtoser).
//
// Certificates given as file paths are reloaded when the files change (fileCert, checked
// at most every certCheckInterval); log reports reloads and failed ones (nil: none).
func ServerTLSConfig(one *config.TLSConfig, set []config.TLSConfig, next []string, log *zap.Logger) (*tls.Config, error) {
	type entry struct {
		path string
		t    *config.TLSConfig
	}
	var on []entry
	if one != nil && one.Status {
		on = append(on, entry{"tls_context", one})
	}
	for i := range set {
		if set[i].Status {
			on = append(on, entry{fmt.Sprintf("tls_context_set[%d]", i), &set[i]})
		}
	}
	if len(on) == 0 {
		return nil, nil
	}
	first := on[0]
	cfg, err := baseTLS(first.path, first.t)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	var certs certSet
	reloads := false
	for _, e := range on {
		if e.t.SDSSource != nil {
			return nil, fmt.Errorf("%s.sds_source: not supported by this build", e.path)
		}
		if e.t.Fallback {
			return nil, fmt.Errorf("%s.fall_back: plaintext fallback is not supported by this build", e.path)
		}
		if e.t.CertChain == "" || e.t.PrivateKey == "" {
			return nil, fmt.Errorf("%s: status is true but cert_chain or private_key is missing", e.path)
		}
		if !isPEM(e.t.CertChain) && !isPEM(e.t.PrivateKey) {
			fc, err := newFileCert(e.path, e.t.CertChain, e.t.PrivateKey, log.With(zap.String("tls_context", e.path)))
			if err != nil {
				return nil, err
			}
			certs.add(nil, fc)
			reloads = true
			continue
		}
		cert, err := loadKeyPair(e.path, e.t.CertChain, e.t.PrivateKey)
		if err != nil {
			return nil, err
		}
		certs.add(&cert, nil)
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	if reloads {
		// GetCertificate is consulted only while Certificates is empty.
		cfg.Certificates = nil
		cfg.GetCertificate = certs.getCertificate
	}
	if first.t.VerifyClient {
		if first.t.CACert == "" {
			return nil, fmt.Errorf("%s.ca_cert: verify_client needs the CA that signs client certificates", first.path)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	var cas *caConfigs
	switch ca := first.t.CACert; {
	case ca != "" && !isPEM(ca):
		// A CA file is reloaded when it changes: a handshake after a change gets a clone
		// of this config with the new bundle (GetConfigForClient).
		fp, err := newFilePool(first.path, ca, log.With(zap.String("tls_context", first.path)))
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = fp.current(time.Now())
		cas = &caConfigs{base: cfg, initial: cfg.ClientCAs, ca: fp,
			set: func(c *tls.Config, p *x509.CertPool) { c.ClientCAs = p }}
	case ca != "":
		if cfg.ClientCAs, err = loadPool(first.path, ca); err != nil {
			return nil, err
		}
	}
	cfg.NextProtos = splitList(first.t.ALPN, true)
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = next
	}
	if cas != nil {
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if c := cas.config(time.Now()); c != cfg {
				return c, nil
			}
			return nil, nil // the bundle cfg was built with: cfg itself
		}
	}
	return cfg, nil
}

// ClientTLS is a cluster's TLS client configuration. Config returns the one for a new
// connection: when ca_cert is a file, with the bundle as it is now (the file is reloaded
// when it changes, as certificate files are).
type ClientTLS struct {
	cfg *tls.Config
	cas *caConfigs // nil: ca_cert unset or inline
}

// Config returns the TLS config for a new upstream connection. The caller must not
// modify it (clone it first).
func (c *ClientTLS) Config() *tls.Config {
	if c.cas == nil {
		return c.cfg
	}
	return c.cas.config(time.Now())
}

// ClientTLSConfig builds an upstream (cluster) TLS config from tls_context; nil when its
// status is not true. path names the tls_context in errors. A client certificate given
// as files, and a ca_cert given as a file, are reloaded when they change, as a
// listener's are; log reports reloads (nil: none).
func ClientTLSConfig(path string, t *config.TLSConfig, log *zap.Logger) (*ClientTLS, error) {
	if t == nil || !t.Status {
		return nil, nil
	}
	if t.SDSSource != nil {
		return nil, fmt.Errorf("%s.sds_source: not supported by this build", path)
	}
	cfg, err := baseTLS(path, t)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg.ServerName = t.ServerName
	cfg.InsecureSkipVerify = t.InsecureSkip
	cfg.NextProtos = splitList(t.ALPN, true)
	ct := &ClientTLS{cfg: cfg}
	switch ca := t.CACert; {
	case ca != "" && !isPEM(ca):
		fp, err := newFilePool(path, ca, log.With(zap.String("tls_context", path)))
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = fp.current(time.Now())
		ct.cas = &caConfigs{base: cfg, initial: cfg.RootCAs, ca: fp,
			set: func(c *tls.Config, p *x509.CertPool) { c.RootCAs = p }}
	case ca != "":
		if cfg.RootCAs, err = loadPool(path, ca); err != nil {
			return nil, err
		}
	}
	switch {
	case t.CertChain != "" && t.PrivateKey != "" && !isPEM(t.CertChain) && !isPEM(t.PrivateKey):
		fc, err := newFileCert(path, t.CertChain, t.PrivateKey, log.With(zap.String("tls_context", path)))
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return fc.current(time.Now()), nil
		}
	case t.CertChain != "" && t.PrivateKey != "":
		cert, err := loadKeyPair(path, t.CertChain, t.PrivateKey)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertChain != "" || t.PrivateKey != "":
		return nil, fmt.Errorf("%s: a client certificate needs both cert_chain and private_key", path)
	}
	return ct, nil
}

// baseTLS applies the settings shared by both sides: type, versions, cipher suites, curves.
func baseTLS(path string, t *config.TLSConfig) (*tls.Config, error) {
	if t.Type != "" {
		return nil, fmt.Errorf("%s.type: %q: extension tls types are not supported by this build", path, t.Type)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var err error
	if t.MinVersion != "" {
		if cfg.MinVersion, err = tlsVersion(t.MinVersion); err != nil {
			return nil, fmt.Errorf("%s.min_version: %w", path, err)
		}
	}
	if t.MaxVersion != "" {
		if cfg.MaxVersion, err = tlsVersion(t.MaxVersion); err != nil {
			return nil, fmt.Errorf("%s.max_version: %w", path, err)
		}
		if cfg.MaxVersion < cfg.MinVersion {
			return nil, fmt.Errorf("%s.max_version: %s is below min_version", path, t.MaxVersion)
		}
	}
	for _, name := range splitList(t.CipherSuites, false) {
		id, ok := cipherSuite(name)
		if !ok {
			return nil, fmt.Errorf("%s.cipher_suites: %q is not a cipher suite this build knows", path, name)
		}
		cfg.CipherSuites = append(cfg.CipherSuites, id)
	}
	for _, name := range splitList(t.EcdhCurves, true) {
		id, ok := curves[name]
		if !ok {
			return nil, fmt.Errorf("%s.ecdh_curves: %q: want x25519, p256, p384 or p521", path, name)
		}
		cfg.CurvePreferences = append(cfg.CurvePreferences, id)
	}
	return cfg, nil
}

// isPEM reports whether a cert_chain, private_key or ca_cert value is PEM text (MOSN's
// rule); otherwise it is a file path.
func isPEM(s string) bool { return strings.Contains(s, "-----BEGIN") }

func loadKeyPair(path, certVal, keyVal string) (tls.Certificate, error) {
	certPEM, err := pemValue(path, "cert_chain", certVal)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := pemValue(path, "private_key", keyVal)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: cert_chain and private_key (%s, %s): %w", path, describe(certVal), describe(keyVal), err)
	}
	return cert, nil
}

func loadPool(path, val string) (*x509.CertPool, error) {
	b, err := pemValue(path, "ca_cert", val)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s.ca_cert (%s): no PEM certificate found", path, describe(val))
	}
	return pool, nil
}

// pemValue returns a field's PEM bytes: the text itself or the named file's content.
func pemValue(path, field, val string) ([]byte, error) {
	if isPEM(val) {
		return []byte(val), nil
	}
	b, err := os.ReadFile(val)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: %w", path, field, err)
	}
	return b, nil
}

// describe names a PEM-or-path value for an error without printing key material.
func describe(val string) string {
	if isPEM(val) {
		return "inline PEM"
	}
	return val
}

func splitList(s string, lower bool) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if lower {
			f = strings.ToLower(f)
		}
		out = append(out, f)
	}
	return out
}

func tlsVersion(s string) (uint16, error) {
	switch strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "V", "")) {
	case "TLS1.0", "TLS10":
		return tls.VersionTLS10, nil
	case "TLS1.1", "TLS11":
		return tls.VersionTLS11, nil
	case "TLS1.2", "TLS12":
		return tls.VersionTLS12, nil
	case "TLS1.3", "TLS13":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q: want TLS1.0, TLS1.1, TLS1.2 or TLS1.3", s)
}

var curves = map[string]tls.CurveID{
	"x25519": tls.X25519,
	"p256":   tls.CurveP256,
	"p384":   tls.CurveP384,
	"p521":   tls.CurveP521,
}

// opensslNames maps MOSN's (OpenSSL-style) cipher suite names to Go's.
var opensslNames = map[string]uint16{
	"ECDHE-ECDSA-AES256-GCM-SHA384":      tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":        tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-AES128-GCM-SHA256":      tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":        tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-WITH-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-WITH-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-AES256-CBC-SHA":           tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES128-CBC-SHA":           tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-CBC-SHA":         tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-ECDSA-AES128-CBC-SHA":         tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"RSA-AES256-CBC-SHA":                 tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	"RSA-AES128-CBC-SHA":                 tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-3DES-EDE-CBC-SHA":         tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
	"RSA-3DES-EDE-CBC-SHA":               tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
}

// cipherSuite resolves a cipher suite by its MOSN (OpenSSL-style) name or its Go/IANA name.
func cipherSuite(name string) (uint16, bool) {
	if id, ok := opensslNames[strings.ToUpper(name)]; ok {
		return id, true
	}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if strings.EqualFold(s.Name, name) {
			return s.ID, true
		}
	}
	return 0, false
}

// errNotTLSNetwork is returned for a TLS config on a packet listener.
var errNotTLSNetwork = errors.New("tls_context needs a stream listener (tcp or unix), not udp")

// flushPartsTLSLocked is flushLocked for a connection written through its own Write
// (TLS), which returns only once all it was given is written: each batch goes out in
// parts of at most handOffChunk bytes, and each part is counted as written (Sent,
// Queued, Full) and wakes those waiting for room before the next is written. Written as
// one batch, up to the queue's limit, a peer that reads slowly showed no progress and no
// room for seconds, and a connection still being read was marked stalled (xprotocol's
// roomOn). Called and returns with c.mu held; the lock is dropped around each write.
func (c *Conn) flushPartsTLSLocked() error {
	for len(c.queue) > 0 && c.reason == "" {
		batch := c.queue
		c.queue = c.spare[:0]
		rest := batch
		var err error
		for len(rest) > 0 && err == nil && c.reason == "" {
			c.mu.Unlock()
			var n int
			n, rest, err = c.chunkBatch(rest)
			c.mu.Lock()
			c.wroteLocked(n)
		}
		cut := len(rest) > 0
		for _, b := range rest { // closed or failed: what is left is not written
			c.addQueued(-b.Len())
			b.Release()
		}
		clear(batch)
		c.spare = batch[:0]
		if err == nil && cut {
			return ErrClosed
		}
		if err != nil {
			if c.reason != "" {
				return ErrClosed
			}
			c.werr = err
			return err
		}
	}
	return nil
}

// tlsUnacked is SockIO.unacked for a TLS connection: the ciphertext the socket under it
// holds unacknowledged; ok is false for other connections. Sent counts plaintext, so Sent
// less this is a mark of progress, not a byte count: two equal readings mean the peer took
// nothing in between. Sent alone stays put while a slow peer drains the socket's send
// buffer (the kernel reports room again only once a good part of it is free), and such a
// peer looked stalled.
func (c *Conn) tlsUnacked() (n int, ok bool) {
	tc, isTLS := c.raw.(*tls.Conn)
	if !isTLS {
		return 0, false
	}
	sc, isSock := tc.NetConn().(syscall.Conn)
	if !isSock {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	if rc.Control(func(fd uintptr) { n, ok = unacked(int(fd)) }) != nil {
		return 0, false
	}
	return n, ok
}
