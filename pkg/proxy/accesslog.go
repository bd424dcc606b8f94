package proxy

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// The request's life for stream filters and the access log, as hooks the HTTP/1 driver
// (session.go) calls. Each hook is a no-op branch when the listener has neither.

// AccessLog returns the proxy's access logs (nil: none).
func (p *Proxy) AccessLog() *accesslog.Logs { return p.cfg.AccessLog }

// beginRequest starts a request whose head (n bytes) was just parsed.
func (s *session) beginRequest(n int) {
	fs := &s.fs
	fs.s = s
	if fs.active {
		// The previous request ended on a path without hooks (the HTTP/2 upstream one).
		s.endRequest()
	}
	fs.logging = s.p.cfg.AccessLog.Enabled()
	if !fs.logging && s.p.cfg.StreamFilters.Len() == 0 {
		return
	}
	fs.active = true
	fs.info.Reset()
	if !fs.logging {
		return
	}
	i := &fs.info
	i.Start = s.start
	i.BytesReceived = uint64(n)
	i.Protocol = string(stream.HTTP1)
	i.DownstreamLocal = addrPort(s.c.LocalAddr())
	i.DownstreamRemote = fs.RemoteAddr()
	s.p.cfg.AccessLog.CaptureRequest(i, stream.HTTP1Request{Head: &s.head})
}

// beginBadRequest starts the line of a request whose head could not be parsed (n bytes
// read): logged with its answer, flag BR, and no request fields.
func (s *session) beginBadRequest(n int) {
	if !s.p.cfg.AccessLog.Enabled() {
		return
	}
	fs := &s.fs
	fs.s = s
	if fs.active {
		s.endRequest()
	}
	fs.logging, fs.active = true, true
	fs.info.Reset()
	i := &fs.info
	i.Start = time.Now()
	i.BytesReceived = uint64(n)
	i.Protocol = string(stream.HTTP1)
	i.DownstreamLocal = addrPort(s.c.LocalAddr())
	i.DownstreamRemote = fs.RemoteAddr()
	i.Flags = accesslog.FlagBadRequest
}

// noteUpstream records the chosen upstream.
func (s *session) noteUpstream(host *cluster.Host, cl *cluster.Cluster, up *upConn) {
	if !s.fs.logging {
		return
	}
	i := &s.fs.info
	i.UpstreamHost = host.Addr()
	i.UpstreamCluster = cl.Name()
	i.UpstreamLocal = addrPort(up.raw.LocalAddr())
	if s.route != nil {
		i.RouteName = s.route.Name()
	}
}

// requestBody counts a forwarded body piece and, unless it is chunked (whose data the
// caller filtered piece by piece), runs the filters on it; true: a filter stopped it.
func (s *session) requestBody(piece []byte, chunked, end bool) bool {
	fs := &s.fs
	if !fs.active {
		return false
	}
	fs.info.BytesReceived += uint64(len(piece))
	if end {
		s.requestReceived()
	}
	if len(fs.filters) == 0 || chunked || len(piece) == 0 {
		return false
	}
	return s.requestData(piece, end)
}

// requestReceived notes that the whole request has been read.
func (s *session) requestReceived() {
	if s.fs.logging {
		s.fs.info.RequestReceived = time.Since(s.fs.info.Start)
	}
}

// responseHead notes the parsed upstream response head (before filters edit it).
func (s *session) responseHead() {
	if !s.fs.logging {
		return
	}
	i := &s.fs.info
	i.ResponseReceived = time.Since(s.fs.info.Start)
	i.ResponseCode = s.rhead.Status
	s.p.cfg.AccessLog.CaptureResponse(i, stream.HTTP1Headers{H: &s.rhead.Headers})
}

// sent counts bytes written downstream.
func (s *session) sent(a, b *buffer.IoBuffer) {
	if !s.fs.logging {
		return
	}
	if a != nil {
		s.fs.info.BytesSent += uint64(a.Len())
	}
	if b != nil {
		s.fs.info.BytesSent += uint64(b.Len())
	}
}

// localAnswered records a proxy-made answer (session.localReply) for the log.
func (s *session) localAnswered(status int, msg string, n int) {
	fs := &s.fs
	if !fs.active {
		return
	}
	if fs.logging {
		fs.info.ResponseCode = status
		fs.info.BytesSent += uint64(n)
		if fs.info.Flags == 0 {
			fs.info.Flags = flagFor(msg)
		}
	}
	s.endRequest()
}

// upstreamFailed flags a response that broke off after its head was sent.
func (s *session) upstreamFailed() {
	s.fs.info.Flags |= accesslog.FlagUpstreamReset
	s.endRequest()
}

// endRequest writes the access log line and releases the filters; once per request.
func (s *session) endRequest() {
	fs := &s.fs
	if !fs.active {
		return
	}
	fs.active = false
	if fs.logging {
		fs.info.Finished = time.Since(s.fs.info.Start)
		s.p.cfg.AccessLog.Log(&fs.info, s.c.ID())
	}
	s.destroyFilters()
}

// abandonRequest ends a request cut short by the downstream connection.
func (s *session) abandonRequest() {
	if s.fs.active {
		s.fs.info.Flags |= accesslog.FlagDownstreamReset
		s.endRequest()
	}
}

// flagFor maps the proxy's own local answers (session.go's messages) to response flags.
func flagFor(msg string) accesslog.Flag {
	switch msg {
	case "no route":
		return accesslog.FlagNoRoute
	case "no healthy upstream":
		return accesslog.FlagNoHealthyHost
	case "upstream connect failed":
		return accesslog.FlagConnectFailure
	case "upstream timeout":
		return accesslog.FlagUpstreamTimeout
	case "upstream closed before the response", "upstream write failed", "invalid upstream response", "upstream reset":
		return accesslog.FlagUpstreamReset
	case "upstream overflow":
		return accesslog.FlagOverflow
	}
	if len(msg) > 11 && msg[:11] == "no cluster " {
		return accesslog.FlagNoCluster
	}
	return accesslog.FlagLocalReply
}
