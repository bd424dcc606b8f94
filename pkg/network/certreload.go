package network

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// certCheckInterval is how often, at most, a listener's certificate files are checked for
// a change: on a handshake, once the interval has passed since the last check.
var certCheckInterval = 10 * time.Second

// fileReload is a value loaded from files (a certificate pair, a CA bundle) and loaded
// again when one of them changes (a rotation by cert-manager, Vault or a deploy script):
// new handshakes get the new value, open connections keep theirs. A value that fails to
// load (a half-written rotation, a key that does not match) is logged and the last good
// one stays in use until the files change again. The files are looked at on use, at most
// every certCheckInterval.
type fileReload[T any] struct {
	what  string // what is loaded, for logs ("tls certificate")
	files []string
	load  func() (*T, error)
	log   *zap.Logger

	cur  atomic.Pointer[T]
	next atomic.Int64 // unix nanoseconds of the next check

	mu   sync.Mutex // one check at a time; guards seen
	seen []fileStamp
}

// fileStamp identifies a file's content well enough to notice a replacement.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// newFileReload loads the value now; load's error is returned as it is.
func newFileReload[T any](what string, files []string, load func() (*T, error), log *zap.Logger) (*fileReload[T], error) {
	f := &fileReload[T]{what: what, files: files, load: load, log: log, seen: make([]fileStamp, len(files))}
	// Stamps first: a change between them and the load is seen at the next check.
	for i, name := range files {
		f.seen[i], _ = stamp(name)
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(v)
	f.next.Store(time.Now().Add(certCheckInterval).UnixNano())
	return f, nil
}

// current returns the value to use, checking the files first when the interval passed.
func (f *fileReload[T]) current(now time.Time) *T {
	if now.UnixNano() >= f.next.Load() && f.mu.TryLock() {
		f.check(now)
		f.mu.Unlock()
	}
	return f.cur.Load()
}

// check loads the value again when a file's stamp changed. Called with f.mu held.
func (f *fileReload[T]) check(now time.Time) {
	f.next.Store(now.Add(certCheckInterval).UnixNano())
	stamps := make([]fileStamp, len(f.files))
	changed := false
	for i, name := range f.files {
		st, err := stamp(name)
		if err != nil {
			return // a file missing mid-rotation is looked at again next time
		}
		stamps[i] = st
		changed = changed || st != f.seen[i]
	}
	if !changed {
		return
	}
	f.seen = stamps
	v, err := f.load()
	if err != nil {
		f.log.Error(f.what+" reload failed; serving the previous one", zap.Error(err))
		return
	}
	f.cur.Store(v)
	f.log.Info(f.what+" reloaded", zap.String("file", f.files[0]))
}

// fileCert is a certificate pair loaded from cert_chain and private_key files and loaded
// again when either changes.
type fileCert = fileReload[tls.Certificate]

// newFileCert loads the pair now; an error names the tls_context's fields.
func newFileCert(path, certFile, keyFile string, log *zap.Logger) (*fileCert, error) {
	return newFileReload("tls certificate", []string{certFile, keyFile}, func() (*tls.Certificate, error) {
		c, err := loadKeyPair(path, certFile, keyFile)
		return &c, err
	}, log)
}

// filePool is a CA bundle loaded from a ca_cert file and loaded again when it changes.
type filePool = fileReload[x509.CertPool]

// newFilePool loads the bundle now; an error names the tls_context's field.
func newFilePool(path, caFile string, log *zap.Logger) (*filePool, error) {
	return newFileReload("tls ca_cert", []string{caFile}, func() (*x509.CertPool, error) {
		return loadPool(path, caFile)
	}, log)
}

// caConfigs hands out a TLS config whose CA bundle (RootCAs or ClientCAs) is the current
// one of a reloaded ca_cert file: the base config while the bundle is the one it was
// built with, else a clone with the new bundle, made once per bundle.
type caConfigs struct {
	base    *tls.Config
	initial *x509.CertPool
	ca      *filePool
	set     func(*tls.Config, *x509.CertPool) // puts a bundle into a clone
	last    atomic.Pointer[caClone]
}

type caClone struct {
	pool *x509.CertPool
	cfg  *tls.Config
}

// config returns the config for a new handshake.
func (c *caConfigs) config(now time.Time) *tls.Config {
	p := c.ca.current(now)
	if p == c.initial {
		return c.base
	}
	if l := c.last.Load(); l != nil && l.pool == p {
		return l.cfg
	}
	n := c.base.Clone()
	n.GetConfigForClient = nil
	c.set(n, p)
	c.last.Store(&caClone{pool: p, cfg: n})
	return n
}

// certSet serves a listener's certificates, some of them from files it reloads. Its
// GetCertificate picks by SNI as crypto/tls does with Config.Certificates: the first
// certificate the client supports, else the first one.
type certSet struct {
	static []*tls.Certificate // inline PEM pairs; nil where files[i] is set
	files  []*fileCert
}

func (s *certSet) add(c *tls.Certificate, f *fileCert) {
	s.static = append(s.static, c)
	s.files = append(s.files, f)
}

func (s *certSet) get(i int, now time.Time) *tls.Certificate {
	if f := s.files[i]; f != nil {
		return f.current(now)
	}
	return s.static[i]
}

func (s *certSet) getCertificate(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now()
	if len(s.static) > 1 {
		for i := range s.static {
			if c := s.get(i, now); chi.SupportsCertificate(c) == nil {
				return c, nil
			}
		}
	}
	return s.get(0, now), nil
}
