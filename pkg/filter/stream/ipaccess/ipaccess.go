// Package ipaccess is the "ip_access" stream filter: it allows or denies requests by the
// client's IP address, answering a denied one with 403. Config, MOSN's:
//
//	{"default_action": "allow",          // or "deny"; what applies when no entry matches
//	 "header": "x-real-ip",              // optional: read the client IP from this header
//	 "ips": [{"action": "deny", "addrs": ["127.0.0.1", "10.0.0.0/8"]}]}
//
// Entries are tried in order; the first whose addresses contain the IP decides. A short
// form is accepted too: {"allow": false, "ips": ["10.0.0.0/8"]} denies the listed
// addresses and allows the rest ("allow": true allows only the listed ones). With
// "header", the first comma-separated address of the header is used (a missing or
// unparsable value falls back to the peer address); trust it only behind a proxy that
// sets it. A route's per_filter_config["ip_access"] replaces the config for that route.
package ipaccess

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "ip_access"

// Entry is one "ips" entry of MOSN's form.
type Entry struct {
	Action string   `json:"action"`
	Addrs  []string `json:"addrs"`
}

// Config is the decoded config; Ips holds either form.
type Config struct {
	DefaultAction string            `json:"default_action,omitempty"`
	Header        string            `json:"header,omitempty"`
	Ips           config.RawMessage `json:"ips,omitempty"`
	Allow         *bool             `json:"allow,omitempty"`
}

type entry struct {
	allow    bool
	prefixes []netip.Prefix
}

type rule struct {
	defaultAllow bool
	header       string
	entries      []entry
}

func init() { config.RegisterStreamFilterConfig(Name, Config{}) }

func parse(raw config.RawMessage) (*rule, error) {
	var c Config
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
	}
	r := &rule{header: c.Header, defaultAllow: true}
	switch strings.ToLower(c.DefaultAction) {
	case "", "allow":
	case "deny":
		r.defaultAllow = false
	default:
		return nil, fmt.Errorf("default_action: unknown %q (known: allow, deny)", c.DefaultAction)
	}
	ips := bytes.TrimSpace(c.Ips)
	if len(ips) == 0 || string(ips) == "null" {
		return r, nil
	}
	var strs []string
	if err := config.Unmarshal(c.Ips, &strs); err == nil {
		// Short form: the listed addresses get "allow", the rest the opposite.
		allow := c.Allow != nil && *c.Allow
		e := entry{allow: allow}
		for i, a := range strs {
			p, err := prefix(a)
			if err != nil {
				return nil, fmt.Errorf("ips[%d]: %w", i, err)
			}
			e.prefixes = append(e.prefixes, p)
		}
		r.entries = append(r.entries, e)
		r.defaultAllow = !allow
		return r, nil
	}
	var es []Entry
	if err := config.Unmarshal(c.Ips, &es); err != nil {
		return nil, fmt.Errorf("ips: want a list of {\"action\", \"addrs\"} or of addresses: %w", err)
	}
	for i, x := range es {
		e := entry{}
		switch strings.ToLower(x.Action) {
		case "allow":
			e.allow = true
		case "deny":
		default:
			return nil, fmt.Errorf("ips[%d].action: unknown %q (known: allow, deny)", i, x.Action)
		}
		for j, a := range x.Addrs {
			p, err := prefix(a)
			if err != nil {
				return nil, fmt.Errorf("ips[%d].addrs[%d]: %w", i, j, err)
			}
			e.prefixes = append(e.prefixes, p)
		}
		r.entries = append(r.entries, e)
	}
	return r, nil
}

// prefix parses an address or a CIDR.
func prefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// allowed decides for ip.
func (r *rule) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, e := range r.entries {
		for _, p := range e.prefixes {
			if p.Contains(ip) {
				return e.allow
			}
		}
	}
	return r.defaultAllow
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

const denied = "ip access denied"

func (in *instance) OnRequestHeaders(hs stream.Headers, _ bool) filter.Status {
	r := in.f.rule
	if o := in.f.routes.Get(in.h.Route()); o != nil {
		r = o
	}
	ip := in.h.RemoteAddr().Addr()
	if r.header != "" {
		if v, ok := hs.Get(r.header); ok {
			if i := strings.IndexByte(v, ','); i >= 0 {
				v = v[:i]
			}
			if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil {
				ip = a
			}
		}
	}
	if r.allowed(ip) {
		return filter.Continue
	}
	in.h.SetResponseFlag(accesslog.FlagUnauthorized)
	in.h.SendLocalReply(http.StatusForbidden, nil, denied)
	return filter.Stop
}
