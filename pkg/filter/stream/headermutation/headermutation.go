// Package headermutation is the "header_mutation" stream filter: it removes and adds
// request headers (before the request is forwarded) and response headers (before the
// response is written downstream). Config, in the shape of MOSN's route header options:
//
//	{"request_headers_to_add":  [{"header": {"key": "x-a", "value": "1"}, "append": false}],
//	 "request_headers_to_remove": ["x-internal"],
//	 "response_headers_to_add": [{"header": {"key": "x-b", "value": "2"}}],
//	 "response_headers_to_remove": ["server"]}
//
// Removals run first, then additions; "append": false replaces every existing value,
// true or absent adds a value. A route's per_filter_config["header_mutation"] replaces the
// config for that route.
package headermutation

import (
	"fmt"
	"sync"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "header_mutation"

// Config is the decoded config.
type Config struct {
	RequestHeadersToAdd     []config.HeaderValueOption `json:"request_headers_to_add,omitempty"`
	RequestHeadersToRemove  []string                   `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToAdd    []config.HeaderValueOption `json:"response_headers_to_add,omitempty"`
	ResponseHeadersToRemove []string                   `json:"response_headers_to_remove,omitempty"`
}

type op struct {
	key, value string
	replace    bool
}

type rule struct {
	reqDel, respDel []string
	reqAdd, respAdd []op
}

func ops(field string, in []config.HeaderValueOption) ([]op, error) {
	var out []op
	for i, o := range in {
		if o.Header == nil || o.Header.Key == "" {
			return nil, fmt.Errorf("%s[%d].header.key: missing", field, i)
		}
		out = append(out, op{key: o.Header.Key, value: o.Header.Value, replace: o.Append != nil && !*o.Append})
	}
	return out, nil
}

func init() { config.RegisterStreamFilterConfig(Name, Config{}) }

func parse(raw config.RawMessage) (*rule, error) {
	var c Config
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
	}
	r := &rule{reqDel: c.RequestHeadersToRemove, respDel: c.ResponseHeadersToRemove}
	var err error
	if r.reqAdd, err = ops("request_headers_to_add", c.RequestHeadersToAdd); err != nil {
		return nil, err
	}
	if r.respAdd, err = ops("response_headers_to_add", c.ResponseHeadersToAdd); err != nil {
		return nil, err
	}
	return r, nil
}

func apply(h stream.Headers, del []string, add []op) {
	for _, k := range del {
		h.Del(k)
	}
	for _, o := range add {
		if o.replace {
			h.Set(o.key, o.value)
		} else {
			h.Add(o.key, o.value)
		}
	}
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

// HeadersOnly implements filter.HeadersOnly: the filter acts on heads alone and is pure.
func (f *factory) HeadersOnly() {}

func (f *factory) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	in := f.pool.Get().(*instance)
	in.h, in.r = h, f.rule
	return in
}

type instance struct {
	filter.Passthrough
	f *factory
	h filter.StreamHandler
	r *rule
}

func (in *instance) OnDestroy() {
	in.h, in.r = nil, nil
	in.f.pool.Put(in)
}

func (in *instance) OnRequestHeaders(hs stream.Headers, _ bool) filter.Status {
	if o := in.f.routes.Get(in.h.Route()); o != nil {
		in.r = o
	}
	apply(hs, in.r.reqDel, in.r.reqAdd)
	return filter.Continue
}

func (in *instance) OnResponseHeaders(_ int, hs stream.Headers, _ bool) filter.Status {
	apply(hs, in.r.respDel, in.r.respAdd)
	return filter.Continue
}
