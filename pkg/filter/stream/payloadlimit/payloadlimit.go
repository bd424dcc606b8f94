// Package payloadlimit is the "payload_limit" stream filter: a request whose body is
// larger than max_entity_size bytes is answered with http_status (default 413). Config,
// MOSN's: {"max_entity_size": 1048576, "http_status": 413}. A declared length
// (Content-Length) over the limit is refused before any byte is forwarded; a body without
// one (chunked) is counted as it arrives and the exchange is reset when it crosses the
// limit. A route's per_filter_config["payload_limit"] replaces the config for that route.
package payloadlimit

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "payload_limit"

// Config is MOSN's payload_limit config.
type Config struct {
	MaxEntitySize int64 `json:"max_entity_size"`
	HTTPStatus    int   `json:"http_status,omitempty"`
}

type rule struct {
	max    int64 // 0: no limit
	status int
	body   string
}

func init() { config.RegisterStreamFilterConfig(Name, Config{}) }

func parse(raw config.RawMessage) (*rule, error) {
	var c Config
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
	}
	if c.MaxEntitySize < 0 {
		return nil, fmt.Errorf("max_entity_size: must not be negative")
	}
	r := &rule{max: c.MaxEntitySize, status: c.HTTPStatus}
	if r.status == 0 {
		r.status = http.StatusRequestEntityTooLarge
	}
	if r.status < 200 || r.status > 599 {
		return nil, fmt.Errorf("http_status: %d is not an HTTP status (200..599)", r.status)
	}
	r.body = "request body over " + strconv.FormatInt(r.max, 10) + " bytes"
	return r, nil
}

// Factory decodes the config and returns the filter factory.
func Factory(raw config.RawMessage) (filter.StreamFilterFactory, error) {
	r, err := parse(raw)
	if err != nil {
		return nil, err
	}
	f := &factory{rule: r}
	f.routes = filter.RouteConfigs[rule]{Name: Name, Parse: parse}
	f.pool.New = func() any { return &instance{f: f} }
	return f, nil
}

type factory struct {
	rule   *rule
	routes filter.RouteConfigs[rule]
	pool   sync.Pool
}

// SizedBodiesOnly implements filter.SizedBodiesOnly: a declared length is refused from the
// head (OnRequestHeaders); only a chunked body is counted (OnRequestData). The filter is
// pure: run again on the same request, it decides the same.
func (f *factory) SizedBodiesOnly() {}

func (f *factory) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	in := f.pool.Get().(*instance)
	in.h, in.r, in.seen = h, f.rule, 0
	return in
}

type instance struct {
	filter.Passthrough
	f    *factory
	h    filter.StreamHandler
	r    *rule
	seen int64
}

func (in *instance) OnDestroy() {
	in.h, in.r = nil, nil
	in.f.pool.Put(in)
}

func (in *instance) OnRequestHeaders(hs stream.Headers, _ bool) filter.Status {
	if o := in.f.routes.Get(in.h.Route()); o != nil {
		in.r = o
	}
	if in.r.max == 0 {
		return filter.Continue
	}
	if v, ok := hs.Get("Content-Length"); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > in.r.max {
			return in.refuse()
		}
	}
	return filter.Continue
}

func (in *instance) OnRequestData(p []byte, _ bool) filter.Status {
	if in.r.max == 0 {
		return filter.Continue
	}
	in.seen += int64(len(p))
	if in.seen > in.r.max {
		return in.refuse()
	}
	return filter.Continue
}

func (in *instance) refuse() filter.Status {
	in.h.SetResponseFlag(accesslog.FlagEntityTooLarge)
	in.h.SendLocalReply(in.r.status, nil, in.r.body)
	return filter.Stop
}
