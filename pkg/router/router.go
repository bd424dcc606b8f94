// Package router holds mosnlite's L7 route tables: MOSN route configs compiled once into
// immutable tables that pick a virtual host by the request's host and then the first route
// whose matchers all hold. It is protocol-agnostic: each protocol's request view implements
// Request (HTTP: Host/:authority and :path; bolt and dubbo: no host or path, matched by the
// service, method, version and group headers), so the same table serves every protocol.
//
// Virtual host selection follows Envoy: an exact domain, then the longest suffix wildcard
// ("*.foo.com", "*-bar.foo.com"), then the longest prefix wildcard ("foo.*"), then "*".
// Hosts match case-insensitively. A domain that names a port ("foo.com:8080") matches only
// that port and wins over a port-less domain at the same stage; a port-less domain matches
// any port. A request with no host (RPC) goes to "*" when the table has one.
//
// Paths match case-sensitively. "prefix" compares against the whole path, query included
// (Envoy's :path); "path" and "regex" compare against the path without its query. Every
// regex (path, header, variable) must match the whole value, as Envoy's safe_regex does. A
// header or variable matcher needs the value to be present; header names ":authority",
// ":path" and ":method" read Host, Path and Method.
//
// Match takes no lock and does not allocate. Tables publishes name → *Table through an
// atomic pointer: readers load, writers (file reload, xDS, the dubbo registry) swap.
package router

import (
	"cmp"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Request is the protocol's view of a request that routing reads. Implementations must not
// allocate in these methods: Match runs for every request.
type Request interface {
	// Host is the HTTP Host or :authority, port included when sent; "" for RPC.
	Host() string
	// Path is the HTTP :path (request target with its query); "" for RPC.
	Path() string
	// Method is the HTTP method; RPC views may return the RPC method name.
	Method() string
	// Header returns the first value of a header: case-insensitive names for HTTP (the
	// implementation's job), exact names for RPC (service, method, version, group, ...).
	Header(name string) (string, bool)
	// Variable returns a request variable (MOSN's route "variables").
	Variable(name string) (string, bool)
}

// Table is one compiled route configuration (a MOSN router_config_name). It is immutable.
type Table struct {
	name       string
	exact      map[string]*vhost // lower-case domain, port included when the domain names one
	suffix     map[string]*vhost // "*.foo.com" stored as ".foo.com"
	suffixLens []int             // distinct key lengths, longest first
	prefix     map[string]*vhost // "foo.*" stored as "foo."
	prefixLens []int
	any        *vhost // "*"
	vhosts     []*vhost
}

type vhost struct {
	name   string
	routes []*Route
}

// maxHostLen bounds the stack buffer used to lower-case a host; longer hosts still match,
// at the cost of an allocation.
const maxHostLen = 320

// New compiles a route configuration: domains into an index, regexes, rewrites, header
// mutations (merged per route) and policies. It does not rely on config.Validate having
// run: anything it cannot compile or would have to guess about is an error naming the
// field. Cluster names are not checked here; that is the validator's and the proxy's job.
func New(cfg config.RouterCfg) (*Table, error) {
	t := &Table{
		name:   cfg.RouterConfigName,
		exact:  map[string]*vhost{},
		suffix: map[string]*vhost{},
		prefix: map[string]*vhost{},
	}
	if err := checkOps(cfg.RequestHeadersToAdd, cfg.ResponseHeadersToAdd); err != nil {
		return nil, t.errorf("router", "%v", err)
	}
	seen := map[string]string{}
	for i := range cfg.VirtualHosts {
		vc := &cfg.VirtualHosts[i]
		vp := fmt.Sprintf("virtual_hosts[%d]", i)
		vh := &vhost{name: vc.Name}
		if err := checkOps(vc.RequestHeadersToAdd, vc.ResponseHeadersToAdd); err != nil {
			return nil, t.errorf(vp, "%v", err)
		}
		if len(vc.Domains) == 0 {
			return nil, t.errorf(vp+".domains", "empty: a virtual host needs at least one domain (\"*\" for any)")
		}
		for j, d := range vc.Domains {
			dp := fmt.Sprintf("%s.domains[%d]", vp, j)
			key := strings.ToLower(d)
			if prev, dup := seen[key]; dup {
				return nil, t.errorf(dp, "domain %q is also in %s", d, prev)
			}
			seen[key] = dp
			if err := t.addDomain(key, vh); err != nil {
				return nil, t.errorf(dp, "%v", err)
			}
		}
		for j := range vc.Routers {
			rp := fmt.Sprintf("%s.routers[%d]", vp, j)
			rt, err := newRoute(&cfg, vc, &vc.Routers[j], fmt.Sprintf("%s/%d", vc.Name, j))
			if err != nil {
				return nil, t.errorf(rp, "%v", err)
			}
			vh.routes = append(vh.routes, rt)
		}
		t.vhosts = append(t.vhosts, vh)
	}
	t.suffixLens = keyLens(t.suffix)
	t.prefixLens = keyLens(t.prefix)
	return t, nil
}

func (t *Table) errorf(path, format string, args ...any) error {
	return fmt.Errorf("router %q: %s: %s", t.name, path, fmt.Sprintf(format, args...))
}

func (t *Table) addDomain(d string, vh *vhost) error {
	stars := strings.Count(d, "*")
	switch {
	case d == "":
		return fmt.Errorf("empty domain")
	case d == "*":
		t.any = vh
	case stars == 0:
		t.exact[d] = vh
	case stars == 1 && d[0] == '*':
		t.suffix[d[1:]] = vh
	case stars == 1 && d[len(d)-1] == '*':
		t.prefix[d[:len(d)-1]] = vh
	default:
		return fmt.Errorf("domain %q: a wildcard is allowed only as the first or last character", d)
	}
	return nil
}

func keyLens(m map[string]*vhost) []int {
	var lens []int
	for k := range m {
		if !slices.Contains(lens, len(k)) {
			lens = append(lens, len(k))
		}
	}
	slices.SortFunc(lens, func(a, b int) int { return cmp.Compare(b, a) })
	return lens
}

// Name is the table's router_config_name.
func (t *Table) Name() string { return t.name }

// Match returns the first route of the request's virtual host whose matchers all hold.
// It takes no lock and does not allocate (hosts longer than 320 bytes excepted).
func (t *Table) Match(r Request) (*Route, bool) {
	if t == nil {
		return nil, false
	}
	vh := t.virtualHost(r.Host())
	if vh == nil {
		return nil, false
	}
	for _, rt := range vh.routes {
		if rt.matches(r) {
			return rt, true
		}
	}
	return nil, false
}

// VirtualHost returns the name of the virtual host that a request with this host goes to.
func (t *Table) VirtualHost(host string) (string, bool) {
	if t == nil {
		return "", false
	}
	if vh := t.virtualHost(host); vh != nil {
		return vh.name, true
	}
	return "", false
}

func (t *Table) virtualHost(host string) *vhost {
	if host == "" || len(t.exact)+len(t.suffix)+len(t.prefix) == 0 {
		return t.any
	}
	var buf [maxHostLen]byte
	h := appendLower(buf[:0], host)
	bare := stripPort(h)
	hasPort := len(bare) != len(h)
	if vh := t.exact[string(h)]; vh != nil {
		return vh
	}
	if hasPort {
		if vh := t.exact[string(bare)]; vh != nil {
			return vh
		}
	}
	// A wildcard must stand for at least one character, hence the strict length checks.
	for _, n := range t.suffixLens {
		if n < len(h) {
			if vh := t.suffix[string(h[len(h)-n:])]; vh != nil {
				return vh
			}
		}
	}
	if hasPort {
		for _, n := range t.suffixLens {
			if n < len(bare) {
				if vh := t.suffix[string(bare[len(bare)-n:])]; vh != nil {
					return vh
				}
			}
		}
	}
	for _, n := range t.prefixLens {
		if n < len(h) {
			if vh := t.prefix[string(h[:n])]; vh != nil {
				return vh
			}
		}
	}
	if hasPort {
		for _, n := range t.prefixLens {
			if n < len(bare) {
				if vh := t.prefix[string(bare[:n])]; vh != nil {
					return vh
				}
			}
		}
	}
	return t.any
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// stripPort returns h without a trailing ":port" (digits only). A bare IPv6 address (more
// than one colon, no brackets) has no port.
func stripPort(h []byte) []byte {
	i := len(h) - 1
	for i >= 0 && '0' <= h[i] && h[i] <= '9' {
		i--
	}
	if i < 0 || i == len(h)-1 || h[i] != ':' {
		return h
	}
	if h[0] == '[' {
		if i > 0 && h[i-1] == ']' {
			return h[:i]
		}
		return h
	}
	for j := 0; j < i; j++ {
		if h[j] == ':' {
			return h
		}
	}
	return h[:i]
}

// valueMatcher is a compiled full-match regex. The patterns MOSN configs use most — ".*"
// for "any value" and plain literals such as a service name — skip the regex engine.
type valueMatcher struct {
	kind valueKind
	lit  string
	re   *regexp.Regexp
}

type valueKind uint8

const (
	valueRegex    valueKind = iota
	valueLiteral            // the pattern has no metacharacters: equality
	valueAny                // .* : any value without a newline; (?s).* : any value
	valueAnyNL              //
	valueNonEmpty           // .+ : a non-empty value without a newline
)

// compileValue compiles expr so that it must match a whole value. expr is compiled alone
// first: wrapping an unbalanced expression could otherwise change its meaning.
func compileValue(expr string) (valueMatcher, error) {
	raw, err := regexp.Compile(expr)
	if err != nil {
		return valueMatcher{}, fmt.Errorf("invalid regex %q: %w", expr, err)
	}
	if lit, complete := raw.LiteralPrefix(); complete {
		return valueMatcher{kind: valueLiteral, lit: lit}, nil
	}
	if t, err := syntax.Parse(expr, syntax.Perl); err == nil && len(t.Sub) == 1 {
		t = t.Simplify()
		switch sub := t.Sub[0].Op; {
		case t.Op == syntax.OpStar && sub == syntax.OpAnyCharNotNL:
			return valueMatcher{kind: valueAny}, nil
		case t.Op == syntax.OpStar && sub == syntax.OpAnyChar:
			return valueMatcher{kind: valueAnyNL}, nil
		case t.Op == syntax.OpPlus && sub == syntax.OpAnyCharNotNL:
			return valueMatcher{kind: valueNonEmpty}, nil
		}
	}
	re, err := regexp.Compile(`\A(?:` + expr + `)\z`)
	if err != nil {
		return valueMatcher{}, fmt.Errorf("invalid regex %q: %w", expr, err)
	}
	return valueMatcher{kind: valueRegex, re: re}, nil
}

func (m *valueMatcher) match(v string) bool {
	switch m.kind {
	case valueLiteral:
		return v == m.lit
	case valueAny:
		return strings.IndexByte(v, '\n') < 0
	case valueAnyNL:
		return true
	case valueNonEmpty:
		return v != "" && strings.IndexByte(v, '\n') < 0
	}
	return m.re.MatchString(v)
}
