package proxy

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// The access log of the event-loop path: the same fields, at the same moments, as the
// goroutine path's hooks (accesslog.go). A request is logged from the moment it is routed
// on the loop; requests handed to the goroutine path are logged there.

// logBegin starts a routed request's line: total bytes (head and body) were read.
func (c *loopConn) logBegin(r stream.HTTP1Request, rt *router.Route, total int) {
	i := &c.info
	i.Reset()
	i.Start = time.Now()
	i.BytesReceived = uint64(total)
	i.Protocol = string(stream.HTTP1)
	i.DownstreamLocal = c.local
	i.DownstreamRemote = c.rc.Remote
	i.RouteName = rt.Name()
	c.p.cfg.AccessLog.CaptureRequest(i, r)
	i.RequestReceived = time.Since(i.Start) // the whole request is read before routing
	c.logged = true
}

// logLeftBody starts the line of a request whose client left before its body was in:
// the loop routes (and so logs) a request only once its whole body is read, so without
// it such a request would leave no line. close writes it with flag DC; code 0.
func (c *loopConn) logLeftBody() {
	view := stream.HTTP1Request{Head: &c.head}
	i := &c.info
	i.Reset()
	i.Start = time.Now()
	i.BytesReceived = uint64(c.in.Len())
	i.Protocol = string(stream.HTTP1)
	i.DownstreamLocal = c.local
	i.DownstreamRemote = c.rc.Remote
	if tbl, ok := c.p.table(); ok {
		if rt, ok := tbl.Match(view); ok {
			i.RouteName = rt.Name()
		}
	}
	c.p.cfg.AccessLog.CaptureRequest(i, view)
	c.logged = true
}

// logBadRequest starts the line of a request whose head could not be parsed (n bytes
// read): logged with its answer, flag BR, and no request fields.
func (c *loopConn) logBadRequest(n int) {
	if !c.p.cfg.AccessLog.Enabled() {
		return
	}
	i := &c.info
	i.Reset()
	i.Start = time.Now()
	i.BytesReceived = uint64(n)
	i.Protocol = string(stream.HTTP1)
	i.DownstreamLocal = c.local
	i.DownstreamRemote = c.rc.Remote
	i.Flags = accesslog.FlagBadRequest
	c.logged = true
}

// logUpstream records the upstream connection the request goes on.
func (c *loopConn) logUpstream(u *loopUp) {
	if !c.logged {
		return
	}
	if !u.local.IsValid() {
		u.local = network.SockName(u.fd)
	}
	i := &c.info
	i.UpstreamHost = u.host.Addr()
	i.UpstreamCluster = c.cl.Name()
	i.UpstreamLocal = u.local
}

// logResponse records the upstream's response head.
func (c *loopConn) logResponse() {
	if !c.logged {
		return
	}
	i := &c.info
	i.ResponseReceived = time.Since(i.Start)
	i.ResponseCode = c.rhead.Status
	c.p.cfg.AccessLog.CaptureResponse(i, stream.HTTP1Headers{H: &c.rhead.Headers})
}

// sent counts n response bytes queued for the client.
func (c *loopConn) sent(n int) {
	if c.logged {
		c.info.BytesSent += uint64(n)
	}
}

// logLocal records an answer the proxy made (n bytes) and writes the line.
func (c *loopConn) logLocal(status int, msg string, n int) {
	i := &c.info
	i.ResponseCode = status
	i.BytesSent += uint64(n)
	if i.Flags == 0 {
		i.Flags = flagFor(msg)
	}
	c.logEnd(0)
}

// logEnd writes the request's line with flags added, once.
func (c *loopConn) logEnd(flags accesslog.Flag) {
	if !c.logged {
		return
	}
	c.logged = false
	i := &c.info
	i.Flags |= flags
	i.Finished = time.Since(i.Start)
	c.p.cfg.AccessLog.Log(i, c.rc.ID())
}
