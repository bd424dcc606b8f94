package router_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// req is a Request: an HTTP request when host or path is set, an RPC one otherwise.
type req struct {
	host, path, method string
	headers, vars      map[string]string
}

func (r *req) Host() string   { return r.host }
func (r *req) Path() string   { return r.path }
func (r *req) Method() string { return r.method }
func (r *req) Header(name string) (string, bool) {
	v, ok := r.headers[name]
	return v, ok
}
func (r *req) Variable(name string) (string, bool) {
	v, ok := r.vars[name]
	return v, ok
}

func httpReq(host, path string, headers ...string) *req {
	r := &req{host: host, path: path, method: "GET", headers: map[string]string{}}
	for i := 0; i+1 < len(headers); i += 2 {
		r.headers[headers[i]] = headers[i+1]
	}
	return r
}

func rpcReq(headers ...string) *req {
	r := httpReq("", "", headers...)
	r.method = ""
	return r
}

func parse(t testing.TB, js string) config.RouterCfg {
	t.Helper()
	var c config.RouterCfg
	if err := config.Unmarshal([]byte(js), &c); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return c
}

func build(t testing.TB, js string) *router.Table {
	t.Helper()
	tb, err := router.New(parse(t, js))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tb
}

// match returns the matched route's name, or "" for no route.
func match(t testing.TB, tb *router.Table, r router.Request) string {
	t.Helper()
	rt, ok := tb.Match(r)
	if !ok {
		if rt != nil {
			t.Fatalf("Match returned a route with ok false")
		}
		return ""
	}
	return rt.Name()
}

// recorder is a HeaderMutator that logs calls.
type recorder struct{ ops []string }

func (m *recorder) Set(k, v string) { m.ops = append(m.ops, "set "+k+"="+v) }
func (m *recorder) Add(k, v string) { m.ops = append(m.ops, "add "+k+"="+v) }
func (m *recorder) Del(k string)    { m.ops = append(m.ops, "del "+k) }
func (m *recorder) String() string  { return strings.Join(m.ops, ", ") }
