package xds

import (
	"slices"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// TestBootstrapUnknownKeys: a misspelt key inside dynamic_resources or static_resources
// (Envoy's protobuf JSON, which ParseBootstrap decodes discarding unknown keys) is reported
// by Parse with its path and a "did you mean", as a warning and as an error under strict;
// a key Envoy has and mosnlite does not read is a warning either way.
func TestBootstrapUnknownKeys(t *testing.T) {
	doc := `{
	  "dynamic_resources": {
	    "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}, "timeot": "1s"}]},
	    "cds_confg": {"ads": {}},
	    "lds_config": {"ads": {}, "initialFetchTimeout": "3s"},
	    "lds_resources_locator": "x"
	  },
	  "static_resources": {
	    "clusters": [{"name": "xds", "type": "STATIC", "conect_timeout": "1s",
	      "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
	        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	        "explicit_http_config": {"http2_protocol_options": {"max_concurent_streams": 1}}}},
	      "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [
	        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}}],
	    "listeners": []
	  }
	}`
	unknown := map[string]string{
		"dynamic_resources.ads_config.grpc_services[0].timeot": "did you mean timeout?",
		"dynamic_resources.cds_confg":                          "did you mean cds_config?",
		"static_resources.clusters[0].conect_timeout":          "did you mean connect_timeout?",
		`static_resources.clusters[0].typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options.max_concurent_streams`: "did you mean max_concurrent_streams?",
	}
	ignored := map[string]string{
		"dynamic_resources.lds_resources_locator": "not supported, ignored",
		"static_resources.listeners":              "not supported, ignored",
	}
	// expect checks that ps holds, for each path in want, a problem whose message has
	// format applied to want[path].
	expect := func(what string, ps []config.Problem, want map[string]string, format string) {
		t.Helper()
		for path, msg := range want {
			msg = strings.Replace(format, "%", msg, 1)
			if !slices.ContainsFunc(ps, func(p config.Problem) bool { return p.Path == path && strings.Contains(p.Msg, msg) }) {
				t.Errorf("%s: no %s: %s in %v", what, path, msg, ps)
			}
		}
	}

	_, warnings, err := config.Parse([]byte(doc), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != len(unknown)+len(ignored) {
		t.Errorf("got %d warnings, want %d: %v", len(warnings), len(unknown)+len(ignored), warnings)
	}
	expect("warnings", warnings, unknown, "unknown field, ignored (%)")
	expect("warnings", warnings, ignored, "%")

	_, warnings, err = config.Parse([]byte(doc), config.ParseOptions{Strict: true})
	ps, ok := err.(config.Problems)
	if !ok || len(ps) != len(unknown) {
		t.Fatalf("strict: err = %v; want the %d unknown keys as errors", err, len(unknown))
	}
	expect("strict errors", ps, unknown, "unknown field (%)")
	expect("strict warnings", warnings, ignored, "%")

	// The keys ParseBootstrap reads, in either spelling protojson accepts, are not reported.
	clean := `{"dynamic_resources": {"cdsConfig": {"ads": {}, "initial_fetch_timeout": "1s"},
	  "ads_config": {"apiType": "GRPC", "transport_api_version": "V3", "grpcServices": [{"googleGrpc": {"targetUri": "127.0.0.1:1", "stat_prefix": "x"}}]}}}`
	if _, warnings, err := config.Parse([]byte(clean), config.ParseOptions{Strict: true}); err != nil || len(warnings) != 0 {
		t.Fatalf("clean: warnings %v, err %v", warnings, err)
	}
}
