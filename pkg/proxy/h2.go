package proxy

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// H2MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the HTTP/2 server
// advertises to each downstream connection.
const H2MaxConcurrentStreams = 100

// H2 is the HTTP/2 downstream driver: http2.Server.ServeConn runs each connection and
// gives every stream its own goroutine (the x/net design), on which the request is
// routed and forwarded synchronously, like HTTP/1 on the connection goroutine. Upstreams
// are HTTP/2 (multiplexed pool) or HTTP/1 (the ping-pong pool), by the route's or the
// proxy's upstream_protocol. It implements network.Handler; Close sends GOAWAY on every
// open connection (graceful: streams in flight finish) and closes the idle upstreams.
type H2 struct {
	p   *Proxy
	srv *http2.Server
	hs  *http.Server // carries MaxHeaderBytes and the graceful shutdown hook
}

// NewH2 returns the HTTP/2 driver for cfg (cfg.Downstream is ignored).
func NewH2(cfg Config) *H2 {
	cfg.Downstream = stream.HTTP2
	h := &H2{p: New(cfg)}
	maxHdr := cfg.Limits.MaxHeaderBytes
	if maxHdr <= 0 {
		maxHdr = http1.DefaultMaxHeaderBytes
	}
	h.srv = &http2.Server{
		MaxConcurrentStreams:         H2MaxConcurrentStreams,
		MaxReadFrameSize:             16 << 10, // the protocol's default; larger frames are a FRAME_SIZE_ERROR
		MaxDecoderHeaderTableSize:    4096,
		MaxEncoderHeaderTableSize:    4096,
		MaxUploadBufferPerConnection: 1 << 20,
		MaxUploadBufferPerStream:     256 << 10,
		CountError:                   h.countError,
	}
	h.hs = &http.Server{
		Handler:        h,
		MaxHeaderBytes: maxHdr,
		ErrorLog:       log.New(h2LogWriter{h.p.cfg.Log}, "", 0),
	}
	// Registers the graceful shutdown hook that Close triggers through hs.Shutdown.
	_ = http2.ConfigureServer(h.hs, h.srv)
	return h
}

// Proxy returns the underlying proxy (its pools and config).
func (h *H2) Proxy() *Proxy { return h.p }

// ServeConn implements network.Handler. c's first bytes are the client preface (prior
// knowledge h2c, or handed back by the Auto sniffer).
func (h *H2) ServeConn(ctx context.Context, c *network.Conn) {
	// Check the preface here so that a client speaking something else gets a clean close
	// (x/net resets the connection with the bad bytes unread).
	var pre [len(http2.ClientPreface)]byte
	_ = c.Raw().SetReadDeadline(time.Now().Add(prefaceTimeout))
	_, err := io.ReadFull(c, pre[:])
	_ = c.Raw().SetReadDeadline(time.Time{})
	if err != nil || string(pre[:]) != http2.ClientPreface {
		if err == nil {
			h.p.protocolError(string(stream.HTTP2))
			h.p.cfg.Log.Info("proxy: invalid HTTP/2 client preface, closing connection",
				zap.String("listener", h.p.cfg.Listener), zap.Stringer("remote", c.RemoteAddr()))
		}
		lingerClose(c)
		return
	}
	c.Unread(pre[:])
	h.srv.ServeConn(h2stream.NetConn{C: c}, &http2.ServeConnOpts{
		Context:    h.p.h2ConnContext(ctx, c),
		BaseConfig: h.hs,
		Handler:    h,
	})
	c.Close("")
}

// Close starts a graceful shutdown of every open HTTP/2 connection (GOAWAY; streams in
// flight finish, then the connection closes) and closes the idle upstream connections.
func (h *H2) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.hs.Shutdown(ctx)
	return h.p.Close()
}

func (h *H2) countError(kind string) {
	h.p.protocolError(string(stream.HTTP2))
	h.p.cfg.Log.Debug("proxy: http2 protocol error", zap.String("listener", h.p.cfg.Listener), zap.String("error", kind))
}

// ServeHTTP implements http.Handler for one downstream stream.
func (h *H2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.p.serveH2Stream(w, r)
}

// h2LogWriter takes x/net's server log lines: a recovered handler panic (a bug) at error
// level, the rest (peers' protocol errors, already counted) at debug.
type h2LogWriter struct{ l *zap.Logger }

func (w h2LogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "panic") {
		w.l.Error("proxy: http2 server", zap.String("log", msg))
	} else if ce := w.l.Check(zap.DebugLevel, "proxy: http2 server"); ce != nil {
		ce.Write(zap.String("log", msg))
	}
	return len(p), nil
}

// prefaceTimeout bounds the wait for the client preface.
const prefaceTimeout = 10 * time.Second

// lingerClose half-closes c, discards what the peer still sends for a moment, then
// closes: closing with unread bytes would reset the connection before the peer reads
// what was written.
func lingerClose(c *network.Conn) {
	if tc, ok := c.Raw().(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
		_ = c.Raw().SetReadDeadline(time.Now().Add(time.Second))
		var buf [512]byte
		for n := 0; n < 64<<10; {
			k, err := c.Raw().Read(buf[:])
			n += k
			if err != nil {
				break
			}
		}
	}
	c.Close(network.CloseProtocolError)
}

// h2Local answers a stream locally.
func h2Local(w http.ResponseWriter, status int, body string) {
	hd := w.Header()
	hd["Content-Type"] = textPlain
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

var textPlain = []string{"text/plain"}
