package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/test/framework"
)

func TestCLIVersionJSON(t *testing.T) {
	code, out := framework.RunCLI(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out)
	}
	if v["version"] == "" || v["commit"] == "" || v["go"] != runtime.Version() {
		t.Fatalf("version fields = %v", v)
	}
}

// Every MOSN example config validates with the binary (exit 0).
func TestCLIValidateMOSNSamples(t *testing.T) {
	files, err := filepath.Glob(framework.RepoPath("pkg", "config", "testdata", "mosn", "*.json"))
	if err != nil || len(files) < 13 {
		t.Fatalf("MOSN sample configs: %d found, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if code, out := framework.RunCLI(t, "validate", "-c", f); code != 0 {
				t.Fatalf("validate exit %d:\n%s", code, out)
			}
		})
	}
}

func TestCLIValidateReportsJSONPath(t *testing.T) {
	bad := `{"servers":[{"listeners":[{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c"}}]}]}]}],
	 "cluster_manager":{"clusters":[{"name":"c","lb_type":"LB_ROUNDROBIN","hosts":[{"address":"127.0.0.1:2"}]},
	                                {"name":"d","lb_type":"LB_FOO","hosts":[{"address":"127.0.0.1:3"}]}]}}`
	path := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(path, []byte(bad), 0o600)
	code, out := framework.RunCLI(t, "validate", "-c", path)
	if code != 1 {
		t.Fatalf("validate exit %d; want 1\n%s", code, out)
	}
	if !strings.Contains(out, `cluster_manager.clusters[1].lb_type: unknown "LB_FOO"`) || !strings.Contains(out, "LB_ROUNDROBIN") {
		t.Fatalf("message does not name the JSON path and the known values:\n%s", out)
	}
	// start refuses the same file, with the same message.
	code, out = framework.RunCLI(t, "start", "-c", path)
	if code != 1 || !strings.Contains(out, "cluster_manager.clusters[1].lb_type") {
		t.Fatalf("start exit %d; want 1 with the path\n%s", code, out)
	}
}

func TestCLIStrictRejectsUnknownField(t *testing.T) {
	cfg := `{"servers":[{"listeners":[{"name":"l","address":"127.0.0.1:1","colour":"blue","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c"}}]}]}]}],
	 "cluster_manager":{"clusters":[{"name":"c","hosts":[{"address":"127.0.0.1:2"}]}]}}`
	path := filepath.Join(t.TempDir(), "unknown.json")
	os.WriteFile(path, []byte(cfg), 0o600)
	if code, out := framework.RunCLI(t, "validate", "-c", path); code != 0 || !strings.Contains(out, "servers[0].listeners[0].colour") {
		t.Fatalf("lenient validate: exit %d, want 0 with a warning naming the field\n%s", code, out)
	}
	if code, out := framework.RunCLI(t, "validate", "--strict", "-c", path); code != 1 || !strings.Contains(out, "servers[0].listeners[0].colour") {
		t.Fatalf("strict validate: exit %d, want 1 naming the field\n%s", code, out)
	}
}

func TestCLIStartRefusesPortInUse(t *testing.T) {
	up := framework.EchoServer(t, "")
	// The listener's address is the upstream's own, so binding must fail.
	code, out := framework.RunCLI(t, "start", "-c", writeTemp(t, tcpProxyConfig(up.Addr(), "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)))
	if code != 1 || !strings.Contains(out, "address already in use") {
		t.Fatalf("start on a used port: exit %d; want 1 with the cause\n%s", code, out)
	}
}

// TestCLIStartRejectsBadEventLoops: --event-loops takes on or off; anything else is a
// usage error naming the value, before any config is read.
func TestCLIStartRejectsBadEventLoops(t *testing.T) {
	code, out := framework.RunCLI(t, "start", "--event-loops", "maybe", "-c", "/nonexistent.json")
	if code != 2 || !strings.Contains(out, `--event-loops: "maybe" is neither on nor off`) {
		t.Fatalf("start --event-loops maybe: exit %d; want 2 naming the value\n%s", code, out)
	}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cfg.json")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCLIValidateChecksXDSBootstrap: a dynamic_resources block naming a cluster that
// exists nowhere is refused by validate, as start refuses it.
func TestCLIValidateChecksXDSBootstrap(t *testing.T) {
	cfg := `{"dynamic_resources":{"ads_config":{"api_type":"GRPC","grpc_services":[{"envoy_grpc":{"cluster_name":"xds_missing"}}]},
	  "lds_config":{"ads":{}},"cds_config":{"ads":{}}}}`
	path := filepath.Join(t.TempDir(), "boot.json")
	os.WriteFile(path, []byte(cfg), 0o600)
	code, out := framework.RunCLI(t, "validate", "-c", path)
	if code != 1 || !strings.Contains(out, "dynamic_resources.ads_config") || !strings.Contains(out, "xds_missing") {
		t.Fatalf("validate exit %d; want 1 naming dynamic_resources.ads_config and the cluster\n%s", code, out)
	}
	code, out = framework.RunCLI(t, "start", "-c", path)
	if code != 1 || !strings.Contains(out, "xds_missing") {
		t.Fatalf("start exit %d; want 1\n%s", code, out)
	}
}

// TestCLIValidateRefusesWhatStartRefuses: configs start refuses (a stream filter's config,
// a wrong JSON type inside one, a route domain) are refused by validate too, with the
// same JSON path.
func TestCLIValidateRefusesWhatStartRefuses(t *testing.T) {
	doc := func(domain, streamFilters string) string {
		return fmt.Sprintf(`{"servers":[{
		  "routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":[%q],
		    "routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}],
		  "listeners":[{"name":"l","address":%q,"stream_filters":%s,
		    "filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}]}],
		  "cluster_manager":{"clusters":[{"name":"c","hosts":[{"address":"127.0.0.1:8080"}]}]}}`, domain, framework.FreePort(t), streamFilters)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"fault status", doc("*", `[{"type":"fault","config":{"abort":{"status":1000,"percentage":1}}}]`), "stream_filters[0].config (fault): abort.status"},
		{"fault key type", doc("*", `[{"type":"fault","config":{"abort":{"status":503,"percentage":"all"}}}]`), "servers[0].listeners[0].stream_filters[0].config.abort.percentage: expected"},
		{"domain", doc("a*b.com", `[]`), "servers[0].routers: router \"r\": virtual_hosts[0].domains[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.json")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"validate", "start"} {
				if code, out := framework.RunCLI(t, cmd, "-c", path); code != 1 || !strings.Contains(out, tc.want) {
					t.Fatalf("%s: exit %d; want 1 naming %q\n%s", cmd, code, tc.want, out)
				}
			}
		})
	}
}
