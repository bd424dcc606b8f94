// Package filtertest has a recording filter.StreamHandler and a map-backed
// stream.Headers for stream filter unit tests.
package filtertest

import (
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Handler records what filters ask for.
type Handler struct {
	Rt      *router.Route
	Req     router.Request
	Remote  netip.AddrPort
	Rnd     uint64 // returned by Rand, then incremented
	Status  int    // from SendLocalReply; 0: none
	Body    string
	Delayed time.Duration
	Flags   accesslog.Flag
}

var _ filter.StreamHandler = (*Handler)(nil)

func (h *Handler) Protocol() stream.Protocol  { return stream.HTTP1 }
func (h *Handler) Route() *router.Route       { return h.Rt }
func (h *Handler) Request() router.Request    { return h.Req }
func (h *Handler) RemoteAddr() netip.AddrPort { return h.Remote }
func (h *Handler) Rand() uint64               { h.Rnd++; return h.Rnd - 1 }
func (h *Handler) Delay(d time.Duration)      { h.Delayed += d }
func (h *Handler) SetResponseFlag(f accesslog.Flag) {
	h.Flags |= f
}
func (h *Handler) SendLocalReply(status int, _ []filter.Header, body string) {
	h.Status, h.Body = status, body
}

// Headers is a stream.Headers over name/value pairs (case-insensitive names).
type Headers struct{ KV [][2]string }

var _ stream.Headers = (*Headers)(nil)

func (h *Headers) Get(name string) (string, bool) {
	for _, kv := range h.KV {
		if strings.EqualFold(kv[0], name) {
			return kv[1], true
		}
	}
	return "", false
}
func (h *Headers) Set(name, value string) { h.Del(name); h.Add(name, value) }
func (h *Headers) Add(name, value string) { h.KV = append(h.KV, [2]string{name, value}) }
func (h *Headers) Del(name string) {
	out := h.KV[:0]
	for _, kv := range h.KV {
		if !strings.EqualFold(kv[0], name) {
			out = append(out, kv)
		}
	}
	h.KV = out
}
func (h *Headers) Range(fn func(name, value string) bool) {
	for _, kv := range h.KV {
		if !fn(kv[0], kv[1]) {
			return
		}
	}
}

// Route builds a route to cluster "c1" for prefix "/" whose per_filter_config holds
// perFilter (filter type → raw JSON).
func Route(perFilter map[string]string) (*router.Route, error) {
	pf := map[string]config.RawMessage{}
	for k, v := range perFilter {
		pf[k] = config.RawMessage(v)
	}
	tables, err := router.Build([]config.RouterCfg{{
		RouterConfigName: "r",
		VirtualHosts: []config.VirtualHost{{Name: "v", Domains: []string{"*"}, Routers: []config.Route{{
			Match:           config.RouteMatch{Prefix: "/"},
			Route:           &config.RouteAction{ClusterName: "c1"},
			PerFilterConfig: pf,
		}}}},
	}})
	if err != nil {
		return nil, err
	}
	rt, ok := tables["r"].Match(Request{})
	if !ok {
		return nil, errors.New("filtertest: route did not match")
	}
	return rt, nil
}

// Request is a router.Request for GET / with no headers.
type Request struct{}

func (Request) Host() string                        { return "h" }
func (Request) Path() string                        { return "/" }
func (Request) Method() string                      { return "GET" }
func (Request) Header(string) (string, bool)        { return "", false }
func (Request) Variable(string) (v string, ok bool) { return }
