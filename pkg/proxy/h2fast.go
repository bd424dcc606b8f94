package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// h2Conn is one downstream HTTP/2 connection's handler (h2stream.Handler).
type h2Conn struct {
	h      *H2
	ctx    context.Context
	c      *network.Conn
	ip     netip.Addr
	remote string
}

func netipAddrPort(a net.Addr) (netip.AddrPort, error) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort(), nil
	}
	return netip.ParseAddrPort(a.String())
}

// ServeStream implements h2stream.Handler. It runs on the connection's goroutine: it only
// routes, then hands the stream to a goroutine of its own.
func (hc *h2Conn) ServeStream(st *h2stream.ServerStream) {
	p := hc.h.p
	if !p.h2Extras() && !st.HasBody() && fastFields(st) {
		if tbl, ok := p.cfg.Routers.Get(p.cfg.RouterName); ok {
			if rt, ok := tbl.Match(h2View{st}); ok && fastRoute(p, rt) {
				go hc.serveFast(st, rt)
				return
			}
		}
	}
	go hc.serveFull(st)
}

// fastRoute reports whether a request routed to rt can take the direct HTTP/1 path: it
// goes upstream over HTTP/1 and is not answered by the route itself.
func fastRoute(p *Proxy, rt *router.Route) bool {
	if _, ok := rt.DirectResponse(); ok {
		return false
	}
	if _, ok := rt.Redirect(); ok {
		return false
	}
	return p.upstreamProtocol(rt, stream.HTTP2) == stream.HTTP1
}

// fastFields reports whether st's fields map onto an HTTP/1 head one to one: at most one
// cookie field (split cookies are joined by the full path).
func fastFields(st *h2stream.ServerStream) bool {
	cookies := 0
	for i := range st.Header {
		if st.Header[i].Name == "cookie" {
			cookies++
		}
	}
	return cookies <= 1
}

// h2View is the router's view of a decoded HTTP/2 request.
type h2View struct{ st *h2stream.ServerStream }

var _ router.Request = h2View{}

func (v h2View) Host() string   { return v.st.Authority }
func (v h2View) Path() string   { return v.st.Path }
func (v h2View) Method() string { return v.st.Method }

// Header implements router.Request; names in the stream are lower case.
func (v h2View) Header(name string) (string, bool) {
	for i := range v.st.Header {
		if f := &v.st.Header[i]; strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Variable implements router.Request, as for HTTP/1.
func (v h2View) Variable(name string) (string, bool) {
	return h2stream.Variable(name, v.st.Method, v.st.Authority, v.st.Path)
}

// h2Fast is the pooled state of one stream on the direct path.
type h2Fast struct {
	t      h2Target
	head   http1.RequestHead
	hdrs   http1.Headers
	edits  http1.Edits
	rhead  http1.ResponseHead
	rhdrs  http1.Headers
	redits http1.Edits
	cr     http1.ChunkedReader
	rid    [32]byte
	xff    []byte
}

var h2Fasts = sync.Pool{New: func() any { return new(h2Fast) }}

// serveFast forwards a bodiless request to an HTTP/1 upstream and streams the answer
// back, on the stream's own goroutine.
func (hc *h2Conn) serveFast(st *h2stream.ServerStream, rt *router.Route) {
	defer st.Done()
	p := hc.h.p
	f := h2Fasts.Get().(*h2Fast)
	defer h2Fasts.Put(f)
	t := &f.t
	*t = h2Target{rt: rt, start: time.Now()}
	err := p.pickTarget(hc.ctx, t, h2View{st}, hc.ip)
	if err == nil {
		err = hc.forwardFast(st, f)
		t.release(err)
	}
	*t = h2Target{}
	switch {
	case err == nil:
	case errors.Is(err, errDownstreamWrite) || st.WasReset():
		// The downstream stream is gone.
	case errors.Is(err, errAbort):
		st.Reset(h2stream.ErrCodeInternal)
	default:
		le, ok := err.(*errLocal)
		if !ok {
			le = errReset
		}
		h2Answer(st, le.status, le.body)
	}
}

// forwardFast writes the HTTP/1 request head and relays the response.
func (hc *h2Conn) forwardFast(st *h2stream.ServerStream, f *h2Fast) error {
	p := hc.h.p
	t := &f.t
	rt := t.rt
	hb := p.cfg.Pool.NewBuffer(512)
	defer hb.Release()
	if err := hc.fastHead(st, f, hb); err != nil {
		return &errLocal{400, "bad request"}
	}
	var uc *upConn
	rb := p.cfg.Pool.NewBuffer(readSize)
	defer rb.Release()
	// A reused connection the upstream closed meanwhile fails before any byte of the
	// response: the bodiless request is sent once more on another connection.
	for attempt := 0; ; attempt++ {
		var err error
		if uc, err = p.h1Conn(hc.ctx, t); err != nil {
			return err
		}
		reused := uc.since != (time.Time{})
		// A downstream reset unblocks the upstream read. The hook holds only the socket:
		// f is pooled and may serve another stream by the time a late hook runs.
		raw := uc.raw
		if !st.OnReset(func() { _ = raw.SetDeadline(time.Unix(1, 0)) }) {
			uc.close()
			return errDownstreamWrite
		}
		var deadline time.Time
		if d := rt.Timeout(); d > 0 {
			deadline = t.start.Add(d)
		}
		_ = uc.raw.SetDeadline(deadline)
		_, err = uc.raw.Write(hb.Bytes())
		var n int
		if err == nil {
			n, err = hc.readHead(f, uc, rb, st.Method == "HEAD")
		}
		if err == nil {
			if !deadline.IsZero() {
				_ = uc.raw.SetDeadline(time.Time{})
			}
			return hc.relay(st, f, uc, rb, n)
		}
		uc.close()
		if st.WasReset() {
			return errDownstreamWrite
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
		if timeout {
			return errTimeout
		}
		if le, ok := err.(*errLocal); ok {
			return le
		}
		if !reused || rb.Len() > 0 || attempt > 0 {
			return errReset
		}
		if !st.OnReset(nil) {
			return errDownstreamWrite
		}
	}
}

// fastHead writes the HTTP/1 request head for st into hb.
func (hc *h2Conn) fastHead(st *h2stream.ServerStream, f *h2Fast, hb *buffer.IoBuffer) error {
	t := &f.t
	rt := t.rt
	hs := f.hdrs[:0]
	for i := range st.Header {
		fl := &st.Header[i]
		switch fl.Name {
		case "host", "te", "content-length":
			continue // Host is written from :authority; TE is hop-by-hop; no body here
		}
		hs = append(hs, http1.Header{Name: sbytes(fl.Name), Value: sbytes(fl.Value)})
	}
	f.hdrs = hs
	f.head = http1.RequestHead{
		Method:        sbytes(st.Method),
		Target:        sbytes(st.Path),
		Host:          sbytes(st.Authority),
		ProtoMinor:    1,
		Headers:       hs,
		ContentLength: -1,
		KeepAlive:     true,
	}
	e := &f.edits
	*e = http1.Edits{Remove: e.Remove[:0], Add: e.Add[:0], Framing: http1.FramingNone}
	// Target and Host always go through the edits, which validate them: a :path or
	// :authority must not carry bytes that would split the HTTP/1 head.
	e.Target = sbytes(rt.RewritePath(st.Path))
	e.Host = sbytes(st.Authority)
	if hr := rt.HostRewrite(); hr != "" {
		e.Host = sbytes(hr)
	} else if rt.AutoHostRewrite() {
		e.Host = sbytes(t.host.Addr())
	}
	if hc.ip.IsValid() {
		f.xff = hc.ip.AppendTo(f.xff[:0])
		e.XForwardedFor = f.xff
	}
	fillRequestID(&f.rid)
	e.RequestID = f.rid[:]
	rt.ApplyRequestHeaders(editMutator{e})
	err := http1.AppendRequestHead(hb, &f.head, e)
	clear(f.hdrs)
	return err
}

// readHead reads the upstream response head into f.rhead, skipping interim answers; n is
// the head's length in rb.
func (hc *h2Conn) readHead(f *h2Fast, uc *upConn, rb *buffer.IoBuffer, isHead bool) (int, error) {
	lim := hc.h.p.cfg.Limits
	rh := &f.rhead
	for {
		*rh = http1.ResponseHead{HeadRequest: isHead, Headers: f.rhdrs[:0]}
		if rb.Len() > 0 {
			n, err := http1.ParseResponseHead(rb.Bytes(), lim, rh)
			if cap(rh.Headers) > cap(f.rhdrs) {
				f.rhdrs = rh.Headers[:0]
			}
			if err != nil {
				return 0, &errLocal{502, "invalid upstream response"}
			}
			if n > 0 && rh.Status >= 100 && rh.Status < 200 && rh.Status != 101 {
				rb.Drain(n)
				continue
			}
			if n > 0 {
				if rh.Status == 101 || rh.Upgrade {
					return 0, &errLocal{502, "upstream switched protocols"}
				}
				return n, nil
			}
		}
		if _, err := rb.ReadOnce(uc.raw); err != nil {
			if err == io.EOF && rb.Len() > 0 {
				return 0, &errLocal{502, "upstream closed before the response"}
			}
			return 0, err
		}
	}
}

// relay sends the response head and body downstream and returns the upstream connection
// to the pool when the exchange ended cleanly.
func (hc *h2Conn) relay(st *h2stream.ServerStream, f *h2Fast, uc *upConn, rb *buffer.IoBuffer, n int) (err error) {
	p := hc.h.p
	rh := &f.rhead
	re := &f.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0]}
	f.t.rt.ApplyResponseHeaders(editMutator{re})
	fields := func(w h2stream.FieldWriter) { responseFields(w, rh, re) }
	status := rh.Status
	body := rh.Body
	remain := rh.ContentLength
	reuse := false
	defer func() {
		if reuse && st.OnReset(nil) {
			p.put(uc, time.Now())
			return
		}
		uc.close()
	}()
	rb.Drain(n)
	switch body {
	case http1.BodyNone:
		if err := st.WriteHeaders(status, true, fields); err != nil {
			return errDownstreamWrite
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	case http1.BodyLength:
		piece := rb.Bytes()
		if int64(len(piece)) > remain {
			piece = piece[:remain]
		}
		remain -= int64(len(piece))
		if err := st.WriteResponse(status, fields, piece, remain == 0); err != nil {
			return errDownstreamWrite
		}
		rb.Drain(len(piece))
		for remain > 0 {
			rb.Reset()
			if _, err := rb.ReadOnce(uc.raw); err != nil && rb.Len() == 0 {
				return errAbort
			}
			piece := rb.Bytes()
			if int64(len(piece)) > remain {
				piece = piece[:remain]
			}
			remain -= int64(len(piece))
			if err := st.WriteData(piece, remain == 0); err != nil {
				return errDownstreamWrite
			}
			rb.Drain(len(piece))
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	}
	if err := st.WriteHeaders(status, false, fields); err != nil {
		return errDownstreamWrite
	}
	if body == http1.BodyChunked {
		cr := &f.cr
		cr.Reset(p.cfg.Limits)
		for {
			data, used, done, cerr := cr.Next(rb.Bytes())
			if cerr != nil {
				return errAbort
			}
			if len(data) > 0 {
				if err := st.WriteData(data, false); err != nil {
					return errDownstreamWrite
				}
			}
			rb.Drain(used)
			if done {
				break
			}
			if used == 0 && len(data) == 0 {
				if rb.Len() == 0 {
					rb.Reset()
				} else if rb.Available() < 4096 {
					rb.Compact()
				}
				if _, err := rb.ReadOnce(uc.raw); err != nil {
					return errAbort
				}
			}
		}
		if len(f.cr.Trailers) > 0 {
			err = st.WriteTrailers(func(w h2stream.FieldWriter) {
				for _, tf := range f.cr.Trailers {
					if !hopByHop(tf.Name) {
						w.FieldBytes(tf.Name, tf.Value)
					}
				}
			})
		} else {
			err = st.WriteData(nil, true)
		}
		if err != nil {
			return errDownstreamWrite
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	}
	// Read until the upstream closes.
	for {
		if rb.Len() > 0 {
			if err := st.WriteData(rb.Bytes(), false); err != nil {
				return errDownstreamWrite
			}
			rb.Reset()
		}
		if _, err := rb.ReadOnce(uc.raw); err != nil {
			if rb.Len() > 0 {
				continue
			}
			if err != io.EOF {
				return errAbort
			}
			if err := st.WriteData(nil, true); err != nil {
				return errDownstreamWrite
			}
			return nil
		}
	}
}

// responseFields writes an HTTP/1 response head's fields as HTTP/2 fields: hop-by-hop
// ones and those the Connection field names are dropped, the framing field is kept only
// for a length-delimited body (or a HEAD answer), and the route's edits apply.
func responseFields(w h2stream.FieldWriter, rh *http1.ResponseHead, re *http1.Edits) {
	for _, hf := range rh.Headers {
		if hopByHop(hf.Name) || rh.Headers.HasToken("Connection", bstr(hf.Name)) {
			continue
		}
		if http1.EqualFold(hf.Name, "content-length") && rh.Body != http1.BodyLength && !rh.HeadRequest {
			continue
		}
		if removedName(re.Remove, hf.Name) {
			continue
		}
		w.FieldBytes(hf.Name, hf.Value)
	}
	for _, af := range re.Add {
		w.FieldBytes(af.Name, af.Value)
	}
}

func removedName(names []string, name []byte) bool {
	for _, n := range names {
		if http1.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// hopByHop reports the fields HTTP/2 does not carry (RFC 9113 §8.2.2).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return http1.EqualFold(name, "te")
	case 7:
		return http1.EqualFold(name, "trailer") || http1.EqualFold(name, "upgrade")
	case 10:
		return http1.EqualFold(name, "connection") || http1.EqualFold(name, "keep-alive")
	case 16:
		return http1.EqualFold(name, "proxy-connection")
	case 17:
		return http1.EqualFold(name, "transfer-encoding")
	}
	return false
}
