// Package fault is the "fault" stream filter: it delays and/or aborts a share of the
// requests, for resilience testing. Config, MOSN's fault stream filter:
//
//	{"delay": {"fixed_delay": "1s", "percentage": 50},
//	 "abort": {"status": 503, "percentage": 10},
//	 "upstream_cluster": "only-this-cluster",
//	 "headers": [{"name": "x-fault", "value": "yes"}]}
//
// The flat names of MOSN's fault_inject network filter are accepted too: "delay_percent",
// "delay_duration", "abort_percent", "abort_status". Percentages are 0..100, drawn from
// the connection's random source. A route's per_filter_config["fault"] replaces the
// listener's config for that route. The delay runs before the abort decision, on the
// connection's goroutine (see filter.StreamHandler.Delay), or on the HTTP/1 event loop's
// timer (filter.LoopDelay).
package fault

import (
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "fault"

// Config is the decoded config.
type Config struct {
	Delay *struct {
		FixedDelay config.Duration `json:"fixed_delay"`
		Percentage uint32          `json:"percentage"`
	} `json:"delay,omitempty"`
	Abort *struct {
		Status     int    `json:"status"`
		Percentage uint32 `json:"percentage"`
	} `json:"abort,omitempty"`
	UpstreamCluster string                 `json:"upstream_cluster,omitempty"`
	Headers         []config.HeaderMatcher `json:"headers,omitempty"`

	// MOSN's fault_inject (network filter) names.
	DelayPercent  *uint32          `json:"delay_percent,omitempty"`
	DelayDuration *config.Duration `json:"delay_duration,omitempty"`
	AbortPercent  *uint32          `json:"abort_percent,omitempty"`
	AbortStatus   *int             `json:"abort_status,omitempty"`
}

// rule is a compiled config.
type rule struct {
	delay        time.Duration
	delayPercent uint32
	abortStatus  int
	abortPercent uint32
	abortBody    string
	cluster      string
	headers      []headerMatch
}

type headerMatch struct {
	name  string
	value string
	re    *regexp.Regexp
}

func init() { config.RegisterStreamFilterConfig(Name, Config{}) }

func parse(raw config.RawMessage) (*rule, error) {
	var c Config
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
	}
	r := &rule{cluster: c.UpstreamCluster}
	if c.Delay != nil {
		r.delay, r.delayPercent = c.Delay.FixedDelay.D(), c.Delay.Percentage
	}
	if c.Abort != nil {
		r.abortStatus, r.abortPercent = c.Abort.Status, c.Abort.Percentage
	}
	if c.DelayDuration != nil {
		r.delay = c.DelayDuration.D()
		if c.DelayPercent == nil {
			r.delayPercent = 100
		}
	}
	if c.DelayPercent != nil {
		r.delayPercent = *c.DelayPercent
	}
	if c.AbortStatus != nil {
		r.abortStatus = *c.AbortStatus
		if c.AbortPercent == nil {
			r.abortPercent = 100
		}
	}
	if c.AbortPercent != nil {
		r.abortPercent = *c.AbortPercent
	}
	switch {
	case r.delay < 0:
		return nil, fmt.Errorf("delay.fixed_delay: must not be negative")
	case r.delayPercent > 100:
		return nil, fmt.Errorf("delay.percentage: %d is over 100", r.delayPercent)
	case r.abortPercent > 100:
		return nil, fmt.Errorf("abort.percentage: %d is over 100", r.abortPercent)
	case r.abortPercent > 0 && (r.abortStatus < 200 || r.abortStatus > 599):
		return nil, fmt.Errorf("abort.status: %d is not an HTTP status (200..599)", r.abortStatus)
	case r.delayPercent > 0 && r.delay == 0:
		return nil, fmt.Errorf("delay.fixed_delay: missing")
	}
	r.abortBody = "fault filter abort"
	if t := http.StatusText(r.abortStatus); t != "" {
		r.abortBody += ": " + t
	}
	for i, h := range c.Headers {
		m := headerMatch{name: h.Name, value: h.Value}
		if h.Name == "" {
			return nil, fmt.Errorf("headers[%d].name: missing", i)
		}
		if h.Regex != nil && *h.Regex {
			re, err := regexp.Compile("^(?:" + h.Value + ")$")
			if err != nil {
				return nil, fmt.Errorf("headers[%d].value: %w", i, err)
			}
			m.re = re
		}
		r.headers = append(r.headers, m)
	}
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

// LoopDelay implements filter.LoopDelay: the filter acts on the request head alone and
// may delay it; its draws make it impure.
func (f *factory) LoopDelay() {}

func (f *factory) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	in := f.pool.Get().(*instance)
	in.h = h
	return in
}

type instance struct {
	filter.Passthrough
	f *factory
	h filter.StreamHandler
}

func (in *instance) OnDestroy() {
	in.h = nil
	in.f.pool.Put(in)
}

func (in *instance) OnRequestHeaders(hs stream.Headers, _ bool) filter.Status {
	h := in.h
	r := in.f.rule
	rt := h.Route()
	if o := in.f.routes.Get(rt); o != nil {
		r = o
	}
	if r.cluster != "" && (rt == nil || rt.ClusterFor(h.Request(), 0) != r.cluster) {
		return filter.Continue
	}
	for _, m := range r.headers {
		v, ok := hs.Get(m.name)
		switch {
		case !ok:
			return filter.Continue
		case m.re != nil:
			if !m.re.MatchString(v) {
				return filter.Continue
			}
		case m.value != "" && v != m.value:
			return filter.Continue
		}
	}
	if r.delay > 0 && filter.Percent(h, r.delayPercent) {
		h.SetResponseFlag(accesslog.FlagFaultDelay)
		h.Delay(r.delay)
	}
	if filter.Percent(h, r.abortPercent) {
		h.SetResponseFlag(accesslog.FlagFaultAbort)
		h.SendLocalReply(r.abortStatus, nil, r.abortBody)
		return filter.Stop
	}
	return filter.Continue
}
