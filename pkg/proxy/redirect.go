package proxy

import (
	"crypto/tls"
	"net/http"
	"strconv"

	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// redirect answers a redirect route: its status (301 unless configured) and a Location
// built from the request's scheme, host and target.
func (s *session) redirect(rt *router.Route, rd router.Redirect, hasBody bool) error {
	h := &s.head
	scheme := "http"
	switch {
	case len(h.Scheme) > 0:
		scheme = string(h.Scheme)
	case s.isTLS():
		scheme = "https"
	}
	code := rd.Code
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		code = http.StatusMovedPermanently
	}
	loc := rd.Location(scheme, string(h.Host), string(h.Target))
	return s.routeReply(rt, code, "", loc, hasBody)
}

func (s *session) isTLS() bool {
	_, ok := s.c.Raw().(*tls.Conn)
	return ok
}

// routeReply answers the current request locally for route rt (direct_response,
// redirect), with the route's response_headers_to_add (route, virtual host and router
// levels) applied. A request with an unread body closes the connection.
func (s *session) routeReply(rt *router.Route, status int, body, location string, hasBody bool) error {
	closeConn := hasBody || !s.keepAlive
	re := &s.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0]}
	rt.ApplyResponseHeaders(editMutator{re})
	ob := s.p.cfg.Pool.NewBuffer(160 + len(body) + len(location))
	var num [20]byte
	_, _ = ob.WriteString("HTTP/1.1 ")
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(status), 10))
	_ = ob.WriteByte(' ')
	_, _ = ob.WriteString(http.StatusText(status))
	_, _ = ob.WriteString("\r\n")
	if location != "" && validFieldValue(location) {
		_, _ = ob.WriteString("Location: ")
		_, _ = ob.WriteString(location)
		_, _ = ob.WriteString("\r\n")
	}
	ownType := false
	for _, f := range re.Add {
		switch {
		case http1.EqualFold(f.Name, "content-length"), http1.EqualFold(f.Name, "connection"),
			http1.EqualFold(f.Name, "transfer-encoding"), http1.EqualFold(f.Name, "location") && location != "":
			continue
		case http1.EqualFold(f.Name, "content-type"):
			ownType = true
		}
		_, _ = ob.Write(f.Name)
		_, _ = ob.WriteString(": ")
		_, _ = ob.Write(f.Value)
		_, _ = ob.WriteString("\r\n")
	}
	if body != "" && !ownType {
		_, _ = ob.WriteString("Content-Type: text/plain\r\n")
	}
	_, _ = ob.WriteString("Content-Length: ")
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
	if closeConn {
		_, _ = ob.WriteString("\r\nConnection: close")
	}
	_, _ = ob.WriteString("\r\n\r\n")
	if !s.isHead {
		_, _ = ob.WriteString(body)
	}
	s.localAnswered(status, body, ob.Len())
	_ = s.c.Write(ob)
	if closeConn {
		return errClose
	}
	return nil
}

func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
