package network

import (
	"crypto/tls"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// certCheckInterval is how often, at most, a listener's certificate files are checked for
// a change: on a handshake, once the interval has passed since the last check.
var certCheckInterval = 10 * time.Second

// fileCert is a server certificate loaded from cert_chain and private_key files, and
// loaded again when either file changes (a rotation by cert-manager, Vault or a deploy
// script): new handshakes get the new pair, open connections keep theirs. A pair that
// fails to load (a half-written rotation, a key that does not match) is logged and the
// last good pair stays in use until the files change again.
type fileCert struct {
	path              string // the tls_context, for logs
	certFile, keyFile string
	log               *zap.Logger

	cur  atomic.Pointer[tls.Certificate]
	next atomic.Int64 // unix nanoseconds of the next check

	mu   sync.Mutex // one check at a time; guards seen
	seen [2]fileStamp
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

// newFileCert loads the pair now; an error names the tls_context's fields.
func newFileCert(path, certFile, keyFile string, log *zap.Logger) (*fileCert, error) {
	f := &fileCert{path: path, certFile: certFile, keyFile: keyFile, log: log}
	// Stamps first: a change between them and the load is seen at the next check.
	f.seen[0], _ = stamp(certFile)
	f.seen[1], _ = stamp(keyFile)
	c, err := loadKeyPair(path, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.cur.Store(&c)
	f.next.Store(time.Now().Add(certCheckInterval).UnixNano())
	return f, nil
}

// current returns the pair to serve, checking the files first when the interval passed.
func (f *fileCert) current(now time.Time) *tls.Certificate {
	if now.UnixNano() >= f.next.Load() && f.mu.TryLock() {
		f.check(now)
		f.mu.Unlock()
	}
	return f.cur.Load()
}

// check reloads the pair when a file's stamp changed. Called with f.mu held.
func (f *fileCert) check(now time.Time) {
	f.next.Store(now.Add(certCheckInterval).UnixNano())
	c0, err0 := stamp(f.certFile)
	c1, err1 := stamp(f.keyFile)
	if err0 != nil || err1 != nil || (c0 == f.seen[0] && c1 == f.seen[1]) {
		return // a file missing mid-rotation is looked at again next time
	}
	f.seen = [2]fileStamp{c0, c1}
	c, err := loadKeyPair(f.path, f.certFile, f.keyFile)
	if err != nil {
		f.log.Error("tls certificate reload failed; serving the previous one", zap.Error(err))
		return
	}
	f.cur.Store(&c)
	f.log.Info("tls certificate reloaded", zap.String("cert_chain", f.certFile))
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
