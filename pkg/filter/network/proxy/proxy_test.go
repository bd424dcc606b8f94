package proxy_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/network/proxy"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tables routes every HTTP request to a direct 200 response, router "r".
func tables(t *testing.T) *router.Tables {
	return proxytest.Routers(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":"x"}}]}]}`)
}

func TestFactory(t *testing.T) {
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	d := filter.Deps{Routers: tables(t), Codecs: ext.Codecs}
	for _, c := range []struct{ cfg, err string }{
		{`{"downstream_protocol":"Http1","router_config_name":"r"}`, ""},
		{`{"downstream_protocol":"Auto","router_config_name":"r"}`, ""},
		// Plain Auto with an HTTP upstream serves the HTTP protocols and leaves bolt and dubbo out.
		{`{"downstream_protocol":"Auto","upstream_protocol":"Http1","router_config_name":"r"}`, ""},
		// An explicit list must be served whole.
		{`{"downstream_protocol":"Http1,bolt","upstream_protocol":"Http1","router_config_name":"r"}`, "bolt"},
		{`{"downstream_protocol":"Http2","router_config_name":"r"}`, ""},
		{`{"downstream_protocol":"Http2","upstream_protocol":"Http1","router_config_name":"r"}`, ""},
		{`{"downstream_protocol":"bolt","router_config_name":"r"}`, ""},
		{`{"downstream_protocol":"X","router_config_name":"r","extend_config":{"sub_protocol":"dubbo"}}`, ""},
		{`{"downstream_protocol":"bolt","upstream_protocol":"dubbo","router_config_name":"r"}`, "no protocol conversion for RPC"},
		{`{"downstream_protocol":"Http1","router_config_name":"nope"}`, `router "nope" not found`},
		{`{"downstream_protocol":"Http1","upstream_protocol":"Http2","router_config_name":"r"}`, ""},
		{`{"downstream_protocol":"Http1","upstream_protocol":"bolt","router_config_name":"r"}`, "forwards to Http1 or Http2 only"},
		{`{"downstream_protocol":"Bogus","router_config_name":"r"}`, "downstream_protocol"},
		// Request timeouts from extend_config, for both HTTP versions.
		{`{"downstream_protocol":"Http1","router_config_name":"r","extend_config":{"request_header_timeout":"5s","request_body_timeout":"30s"}}`, ""},
		{`{"downstream_protocol":"Http2","router_config_name":"r","extend_config":{"request_body_timeout":"0s"}}`, ""},
		{`{"downstream_protocol":"Http1","router_config_name":"r","extend_config":{"request_body_timeout":"soon"}}`, "extend_config.request_body_timeout"},
		{`{"downstream_protocol":"Http2","router_config_name":"r","extend_config":{"request_body_timeout":"-1s"}}`, "request_body_timeout: negative duration"},
	} {
		f, err := proxy.Factory(config.RawMessage(c.cfg), d)
		if c.err == "" {
			if err != nil {
				t.Fatalf("%s: %v", c.cfg, err)
			}
			if _, ok := f.(network.Handler); !ok {
				t.Fatalf("%s: not a network.Handler", c.cfg)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Fatalf("%s: err %v, want %q", c.cfg, err, c.err)
		}
	}
	// A build without a codec for the protocol refuses it by name.
	if _, err := proxy.Factory(config.RawMessage(`{"downstream_protocol":"bolt","router_config_name":"r"}`), filter.Deps{Routers: tables(t), Codecs: extension.NewSet().Codecs}); err == nil || !strings.Contains(err.Error(), "bolt") {
		t.Fatalf("no bolt codec: err %v", err)
	}
	if _, err := proxy.Factory(config.RawMessage(`{"router_config_name":"r"}`), filter.Deps{}); err == nil {
		t.Fatal("no routers: want an error")
	}
}
