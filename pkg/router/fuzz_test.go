package router_test

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

// FuzzRouteConfig: New never panics on a decodable route config, whatever it holds, and
// the tables it builds never panic when matching, picking clusters, hashing, rewriting,
// mutating headers or deciding retries for any request. Seeds: the route configs of MOSN's
// samples plus testdata/fuzz/FuzzRouteConfig.
func FuzzRouteConfig(f *testing.F) {
	files, _ := filepath.Glob("../config/testdata/mosn/*.json")
	for _, file := range files {
		c, _, err := config.Load(file, config.ParseOptions{})
		if err != nil {
			f.Fatal(err)
		}
		for _, s := range c.Servers {
			for _, r := range s.Routers {
				js, err := json.Marshal(r)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(js, "", "/", "service", "com.foo.Echo")
				f.Add(js, "Example.COM:8080", "/a/b?c=d", "x-user", "alice")
			}
		}
	}
	f.Fuzz(func(t *testing.T, cfg []byte, host, path, hname, hvalue string) {
		var c config.RouterCfg
		if config.Unmarshal(cfg, &c) != nil {
			return
		}
		tb, err := router.New(c)
		if err != nil {
			return
		}
		for _, r := range []*req{
			{host: host, path: path, method: "GET", headers: map[string]string{hname: hvalue, "cookie": hvalue}, vars: map[string]string{hname: hvalue}},
			{headers: map[string]string{hname: hvalue}},
		} {
			tb.VirtualHost(host)
			rt, ok := tb.Match(r)
			if !ok {
				continue
			}
			rt.ClusterFor(r, uint64(len(hvalue))*0x9e3779b97f4a7c15)
			rt.HashKey(r, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
			rt.RewritePath(path)
			var m recorder
			rt.ApplyRequestHeaders(&m)
			rt.ApplyResponseHeaders(&m)
			if rd, ok := rt.Redirect(); ok {
				rd.Location("http", host, path)
			}
			rt.Retry().ShouldRetry(0, len(hvalue)%600, false, nil)
			if mi, ok := rt.Mirror(); ok && mi.Percent > 100 {
				t.Fatalf("mirror percent %d over 100", mi.Percent)
			}
			if d, ok := rt.DirectResponse(); ok && (d.Status < 100 || d.Status > 599) {
				t.Fatalf("direct response status %d", d.Status)
			}
		}
	})
}
