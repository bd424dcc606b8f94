package proxy

import (
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// DefaultRequestHeaderTimeout bounds how long a request head may stay incomplete.
const DefaultRequestHeaderTimeout = 10 * time.Second

// DefaultRequestBodyTimeout bounds the gap between two reads of an incomplete request
// body (nginx's client_body_timeout default).
const DefaultRequestBodyTimeout = 60 * time.Second

// uploadBound is the upstream socket's bound while a request body is still being
// forwarded: the request body timeout from now (the upload's latest progress; zero: the
// clock), as the client's side has (the gap between its reads); zero when the body
// timeout is off. The route timeout starts only once the request is in.
func (p *Proxy) uploadBound(now time.Time) time.Time {
	bt := p.requestBodyTimeout()
	if bt < 0 {
		return time.Time{}
	}
	if now.IsZero() {
		now = time.Now()
	}
	return now.Add(bt)
}

// headPartial arms the connection's read deadline when a request head has started
// arriving but is not complete (pending), and disarms it once the head is parsed. No
// timer per request: the socket's own deadline is set at most once per partial head, so
// keep-alive connections idle between requests and complete heads cost nothing.
func (s *session) headPartial(pending bool) {
	if pending {
		if s.x.headArmed || s.p.cfg.RequestHeaderTimeout < 0 {
			return
		}
		s.x.headArmed = true
		_ = s.c.Raw().SetReadDeadline(time.Now().Add(s.p.requestHeaderTimeout()))
		return
	}
	if s.x.headArmed {
		s.x.headArmed = false
		if !s.bodyArmed {
			_ = s.c.Raw().SetReadDeadline(time.Time{})
		}
	}
}

// bodyPartial arms the connection's read deadline after a read that left a request body
// incomplete (pending), so the next read must come within the body timeout, and disarms
// it once the body is complete. Bodies that arrive with their head, or within one read,
// cost nothing.
func (s *session) bodyPartial(pending bool) {
	if pending {
		d := s.p.requestBodyTimeout()
		if d < 0 {
			return
		}
		s.bodyArmed = true
		_ = s.c.Raw().SetReadDeadline(time.Now().Add(d))
		return
	}
	if s.bodyArmed {
		s.bodyArmed = false
		if !s.x.headArmed {
			_ = s.c.Raw().SetReadDeadline(time.Time{})
		}
	}
}

func (p *Proxy) requestBodyTimeout() time.Duration {
	if p.cfg.RequestBodyTimeout == 0 {
		return DefaultRequestBodyTimeout
	}
	return p.cfg.RequestBodyTimeout
}

// bodyTimedOut answers 408 when the read loop ended because a request body stalled for
// the body timeout: the incomplete upstream request is dropped; 504 instead when the
// upstream had stalled the upload before (an HTTP/2 upstream's stall bound cut it,
// h2Stalled, or the write to an HTTP/1 upstream ran out of time). It reports whether it
// did.
func (s *session) bodyTimedOut(err error) bool {
	if !s.bodyArmed || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	s.bodyArmed = false
	if s.h2Stalled() {
		// The HTTP/2 upstream stalled first: its stall bound cut the upload, and the
		// body left was being read only to be dropped before the upstream's 504. A
		// client held back meanwhile (the proxy did not read it while the upstream
		// blocked the body) is not blamed for a pause during that drain.
		s.p.cfg.Log.Debug("proxy: request body stalled after the upstream's stall bound cut it")
		s.h2AbortWith(errTimeout)
		s.inBody = false
		s.keepAlive = false
		s.localReply(statusTimeout, errTimeout.body, true, false)
		return true
	}
	if s.h2 == nil && s.up != nil && s.upFailed && s.upTimeout {
		// Likewise for an HTTP/1 upstream: the write of the body to it ran out of time
		// first (writeUp), and the body left was being drained for the upstream's 504.
		s.p.cfg.Log.Debug("proxy: request body stalled after the upstream stopped taking it")
		s.up.report(false)
		s.finishUpstream(false, errors.New("upstream timeout"))
		s.inBody = false
		s.keepAlive = false
		s.localReply(statusTimeout, errTimeout.body, true, false)
		return true
	}
	s.p.protocolError(string(stream.HTTP1))
	s.p.cfg.Log.Debug("proxy: request body timeout")
	s.dropUpstream()
	s.inBody = false
	s.keepAlive = false
	s.localReply(http.StatusRequestTimeout, "request body timeout", true, false)
	return true
}

func (p *Proxy) requestHeaderTimeout() time.Duration {
	if p.cfg.RequestHeaderTimeout == 0 {
		return DefaultRequestHeaderTimeout
	}
	return p.cfg.RequestHeaderTimeout
}

// headTimedOut answers 408 when the read loop ended because a partial head outlived the
// request header timeout. It reports whether it did.
func (s *session) headTimedOut(err error) bool {
	if !s.x.headArmed || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	s.x.headArmed = false
	s.p.protocolError(string(stream.HTTP1))
	s.p.cfg.Log.Debug("proxy: request header timeout")
	s.keepAlive = false
	s.localReply(http.StatusRequestTimeout, "request header timeout", true, false)
	return true
}

// headTooLarge answers 431 when the read loop ended because a partial request head filled
// the connection's buffer limit (per_connection_buffer_limit_bytes below the head size
// limit) before it ended. It reports whether it did.
func (s *session) headTooLarge(err error) bool {
	if !errors.Is(err, network.ErrReadLimit) || !s.sniffed || s.inBody || s.x.tunnel != nil {
		return false
	}
	s.p.protocolError(string(stream.HTTP1))
	s.p.cfg.Log.Debug("proxy: request head over the connection buffer limit")
	s.keepAlive = false
	s.localReply(http.StatusRequestHeaderFieldsTooLarge, "request head over per_connection_buffer_limit_bytes", true, false)
	return true
}
