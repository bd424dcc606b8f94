package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// doc builds a one-server config from its listeners, routers and clusters (JSON array bodies).
func doc(listeners, routers, clusters string) string {
	return `{"servers":[{"listeners":[` + listeners + `],"routers":[` + routers + `]}],` +
		`"cluster_manager":{"clusters":[` + clusters + `]}}`
}

const (
	c1      = `{"name":"c1","type":"SIMPLE","lb_type":"LB_RANDOM","hosts":[{"address":"127.0.0.1:8080"}]}`
	c2      = `{"name":"c2","hosts":[{"address":"127.0.0.1:8081"}]}`
	router1 = `{"router_config_name":"r1","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"c1"}}]}]}`
)

// proxyListener is a tcp listener with a proxy filter whose config is cfg.
func proxyListener(name, addr, cfg string) string {
	return `{"name":"` + name + `","address":"` + addr + `","filter_chains":[{"filters":[{"type":"proxy","config":` + cfg + `}]}]}`
}

func filterListener(network, typ, cfg string) string {
	return `{"name":"l","address":"127.0.0.1:2045","network":"` + network + `","filter_chains":[{"filters":[{"type":"` + typ + `","config":` + cfg + `}]}]}`
}

// routeDoc is a config whose only route is route (clusters c1 and c2 exist).
func routeDoc(route string) string {
	return doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[`+route+`]}]}`, c1+","+c2)
}

// clusterDoc is a config whose only cluster is cluster.
func clusterDoc(cluster string) string { return `{"cluster_manager":{"clusters":[` + cluster + `]}}` }

var httpProxy = proxyListener("l", "127.0.0.1:2045", `{"downstream_protocol":"Http1","router_config_name":"r1"}`)

// check runs the whole pipeline (Parse, ApplyDefaults, Validate) as `mosnlite start` does.
func check(t *testing.T, data string, strict bool) (warnings []config.Problem, errs config.Problems) {
	t.Helper()
	c, warnings, err := config.Parse([]byte(data), config.ParseOptions{Strict: strict})
	if err == nil {
		c.ApplyDefaults()
		var vw []config.Problem
		vw, err = c.Validate()
		warnings = append(warnings, vw...)
	}
	if err != nil && !errors.As(err, &errs) {
		t.Fatalf("error is %T, want config.Problems: %v", err, err)
	}
	return warnings, errs
}

func find(ps []config.Problem, path, phrase string) bool {
	for _, p := range ps {
		if p.Path == path && strings.Contains(p.Msg, phrase) {
			return true
		}
	}
	return false
}

func TestBaseDocsAreValid(t *testing.T) {
	for _, d := range []string{
		doc(httpProxy, router1, c1),
		doc(filterListener("tcp", "tcp_proxy", `{"cluster":"c1"}`), "", c1),
		doc(filterListener("udp", "udp_proxy", `{"cluster":"c1"}`), "", c1),
	} {
		if w, errs := check(t, d, true); len(errs) > 0 || len(w) > 0 {
			t.Errorf("%s:\nwarnings %v\nerrors:\n%v", d, w, errs)
		}
	}
}

func TestBrokenConfigs(t *testing.T) {
	const (
		l0      = "servers[0].listeners[0]"
		f0      = l0 + ".filter_chains[0].filters[0]"
		route0  = "servers[0].routers[0].virtual_hosts[0].routers[0]"
		cluster = "cluster_manager.clusters"
	)
	for _, tc := range []struct {
		name   string
		data   string
		strict bool
		path   string
		phrase string
	}{
		{"syntax error", "{\n  \"servers\": [\n    {\"name\": }\n  ]\n}", false, "$", "syntax error at line 3, column 14: invalid character '}' looking for a value"},
		{"trailing comma", "{\"admin\": {},\n}", false, "$", "line 2, column 1: invalid character '}' looking for the beginning of an object key"},
		{"unterminated", `{"servers": [`, false, "$", "line 1, column 14: unexpected end of input"},
		{"garbage after value", `{} {}`, false, "$", "line 1, column 4: invalid character '{' after the top-level value"},
		{"wrong type string for number", doc(httpProxy, router1, `{"name":"c1","hosts":[{"address":"127.0.0.1:80","weight":"3"}]}`), false,
			cluster + "[0].hosts[0].weight", `expected a non-negative integer, got string "3"`},
		{"wrong type string for array", `{"servers":[{"listeners":"l"}]}`, false, "servers[0].listeners", `expected an array, got string "l"`},
		{"negative uint", doc(httpProxy, router1, `{"name":"c1","hosts":[{"address":"127.0.0.1:80","weight":-1}]}`), false,
			cluster + "[0].hosts[0].weight", "expected a non-negative integer, got number -1"},
		{"fraction for int", doc(`{"name":"l","address":"127.0.0.1:1","max_connections":1.5}`, "", ""), false, l0 + ".max_connections", "expected an integer, got number 1.5"},
		{"wrong type keeps canonical path", doc(httpProxy, router1, `{"Name":"c1","LB_TYPE":5,"hosts":[]}`), false,
			cluster + "[0].lb_type", "expected a string, got number 5"},
		{"wrong type inside filter config", doc(filterListener("tcp", "tcp_proxy", `{"Cluster":5}`), "", c1), false,
			f0 + ".config.cluster", "expected a string, got number 5"},
		{"unknown lb", doc(httpProxy, router1, c1+`,{"name":"c2","lb_type":"LB_FOO","hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[1].lb_type", `unknown "LB_FOO" (known: LB_ROUNDROBIN, LB_RANDOM, LB_WEIGHTED_ROUNDROBIN,`},
		{"lb case", doc(httpProxy, router1, `{"name":"c1","lb_type":"lb_random","hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].lb_type", "did you mean LB_RANDOM?"},
		{"unknown cluster type", doc(httpProxy, router1, `{"name":"c1","type":"STATIC"}`), false, cluster + "[0].type", `unknown "STATIC" (known: SIMPLE, STRICT_DNS, EDS, ORIGINAL_DST)`},
		{"original_dst cluster lb", doc(httpProxy, router1, `{"name":"c1","type":"ORIGINAL_DST","lb_type":"LB_RANDOM"}`), false, cluster + "[0].lb_type", "balances with LB_ORIGINAL_DST"},
		{"unknown network filter", doc(filterListener("tcp", "http_proxy", `{}`), "", c1), false, f0 + ".type", `unknown "http_proxy" (known: proxy, tcp_proxy, udp_proxy)`},
		{"unknown stream filter", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r1"}}]}],"stream_filters":[{"type":"gzip"}]}`, router1, c1), false,
			l0 + ".stream_filters[0].type", `unknown "gzip" (known: fault, payload_limit`},
		{"unknown access log variable", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r1"}}]}],"access_logs":[{"log_path":"stdout","log_format":"%start_time% %bogus%"}]}`, router1, c1), false,
			l0 + ".access_logs[0].log_format", `unknown variable %bogus% (known: bytes_received`},
		{"unknown listener filter", doc(`{"name":"l","address":"127.0.0.1:1","listener_filters":[{"type":"tls_inspector"}],"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".listener_filters[0].type", `unknown "tls_inspector" (known: original_dst)`},
		{"unknown protocol", doc(proxyListener("l", "127.0.0.1:1", `{"downstream_protocol":"Http3","router_config_name":"r1"}`), router1, c1), false,
			f0 + ".config.downstream_protocol", `unknown "Http3" (known: Http1, Http2, Auto, bolt, boltv2, dubbo, X)`},
		{"unknown protocol in list", doc(proxyListener("l", "127.0.0.1:1", `{"downstream_protocol":"Http1,grpc","router_config_name":"r1"}`), router1, c1), false,
			f0 + ".config.downstream_protocol", `unknown "grpc"`},
		{"X without sub_protocol", doc(proxyListener("l", "127.0.0.1:1", `{"downstream_protocol":"X","router_config_name":"r1"}`), router1, c1), false,
			f0 + ".config.downstream_protocol", "needs extend_config.sub_protocol"},
		{"unknown sub_protocol", doc(proxyListener("l", "127.0.0.1:1", `{"downstream_protocol":"X","router_config_name":"r1","extend_config":{"sub_protocol":"thrift"}}`), router1, c1), false,
			f0 + ".config.extend_config.sub_protocol", `unknown "thrift" (known: bolt, boltv2, dubbo)`},
		{"missing downstream protocol", doc(proxyListener("l", "127.0.0.1:1", `{"router_config_name":"r1"}`), router1, c1), false,
			f0 + ".config.downstream_protocol", "missing"},
		{"dangling router", doc(proxyListener("l", "127.0.0.1:1", `{"downstream_protocol":"Http1","router_config_name":"nope"}`), router1, c1), false,
			f0 + ".config.router_config_name", `router "nope" is not in servers[0].routers (known: r1)`},
		{"dangling cluster in tcp_proxy", doc(filterListener("tcp", "tcp_proxy", `{"cluster":"ghost"}`), "", c1), false,
			f0 + ".config.cluster", `cluster "ghost" is not in cluster_manager.clusters`},
		{"dangling cluster in tcp_proxy route", doc(filterListener("tcp", "tcp_proxy", `{"routes":[{"cluster":"c1"},{"cluster":"ghost"}]}`), "", c1), false,
			f0 + ".config.routes[1].cluster", `cluster "ghost" is not in cluster_manager.clusters`},
		{"tcp_proxy without cluster", doc(filterListener("tcp", "tcp_proxy", `{"stat_prefix":"x"}`), "", c1), false,
			f0 + ".config.cluster", "needs a cluster or routes"},
		{"tcp_proxy bad port list", doc(filterListener("tcp", "tcp_proxy", `{"routes":[{"cluster":"c1","destination_port":"80-x"}]}`), "", c1), false,
			f0 + ".config.routes[0].destination_port", `bad port range "80-x"`},
		{"dangling cluster in udp_proxy", doc(filterListener("udp", "udp_proxy", `{"cluster":"ghost"}`), "", c1), false,
			f0 + ".config.cluster", `cluster "ghost" is not in`},
		{"dangling route cluster", doc(httpProxy, strings.Replace(router1, `"c1"`, `"c9"`, 1), c1), false,
			route0 + ".route.cluster_name", `cluster "c9" is not in cluster_manager.clusters`},
		{"dangling weighted cluster", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"route":{"weighted_clusters":[{"cluster":{"name":"c1","weight":50}},{"cluster":{"name":"c9","weight":50}}]}}]}]}`, c1), false,
			route0 + ".route.weighted_clusters[1].cluster.name", `cluster "c9" is not in`},
		{"dangling mirror cluster", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"route":{"cluster_name":"c1"},"request_mirror_policies":{"cluster":"m","percent":10}}]}]}`, c1), false,
			route0 + ".request_mirror_policies.cluster", `cluster "m" is not in`},
		{"route without action", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"match":{"prefix":"/"}}]}]}`, c1), false,
			route0, "no action"},
		{"duplicate listener name", doc(httpProxy+","+proxyListener("l", "127.0.0.1:2046", `{"downstream_protocol":"Http1","router_config_name":"r1"}`), router1, c1), false,
			"servers[0].listeners[1].name", `duplicate listener name "l" (also servers[0].listeners[0])`},
		{"duplicate address", doc(httpProxy+","+proxyListener("m", "127.0.0.1:2045", `{"downstream_protocol":"Http1","router_config_name":"r1"}`), router1, c1), false,
			"servers[0].listeners[1].address", `address "127.0.0.1:2045" is already bound by the listener at servers[0].listeners[0].address`},
		{"overlapping wildcard address", doc(proxyListener("a", "0.0.0.0:80", `{"downstream_protocol":"Http1","router_config_name":"r1"}`)+","+proxyListener("b", "127.0.0.1:80", `{"downstream_protocol":"Http1","router_config_name":"r1"}`), router1, c1), false,
			"servers[0].listeners[1].address", "overlaps the all-interfaces address"},
		{"bad listener port", doc(proxyListener("l", "127.0.0.1:http", `{"downstream_protocol":"Http1","router_config_name":"r1"}`), router1, c1), false,
			l0 + ".address", `port "http" is not a number in 0-65535`},
		{"listener address without port", doc(proxyListener("l", "127.0.0.1", `{"downstream_protocol":"Http1","router_config_name":"r1"}`), router1, c1), false,
			l0 + ".address", "want host:port"},
		{"unknown network", doc(filterListener("sctp", "tcp_proxy", `{"cluster":"c1"}`), "", c1), false, l0 + ".network", `unknown "sctp" (known: tcp, udp, unix)`},
		{"bad duration", doc(httpProxy, router1, `{"name":"c1","connect_timeout":"5 seconds","hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].connect_timeout", `invalid duration "5 seconds"`},
		{"negative duration", doc(httpProxy, router1, `{"name":"c1","connect_timeout":"-1s","hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].connect_timeout", `negative duration "-1s"`},
		{"negative integer duration", doc(filterListener("tcp", "tcp_proxy", `{"cluster":"c1","idle_timeout":-5}`), "", c1), false,
			f0 + ".config.idle_timeout", "negative duration -5"},
		{"duration of wrong type", `{"drain":{"timeout":true}}`, false, "drain.timeout", "expected a string such as \"15s\" or integer nanoseconds, got boolean"},
		{"bad use_original_dst", doc(`{"name":"l","address":"127.0.0.1:1","use_original_dst":"dnat","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".use_original_dst", `unknown "dnat" (known: "redirect", "tproxy"`},
		{"bad simple host", doc(httpProxy, router1, `{"name":"c1","hosts":[{"address":"backend:8080"}]}`), false,
			cluster + "[0].hosts[0].address", `"backend:8080" is not ip:port`},
		{"bad dns host", doc(httpProxy, router1, `{"name":"c1","type":"STRICT_DNS","hosts":[{"address":"backend"}]}`), false,
			cluster + "[0].hosts[0].address", `"backend": want host:port`},
		{"duplicate host", doc(httpProxy, router1, `{"name":"c1","hosts":[{"address":"127.0.0.1:1"},{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].hosts[1].address", "duplicate host"},
		{"udp_proxy on tcp listener", doc(filterListener("tcp", "udp_proxy", `{"cluster":"c1"}`), "", c1), false,
			f0 + ".type", "udp_proxy needs a udp listener; this one is tcp"},
		{"tcp_proxy on udp listener", doc(filterListener("udp", "tcp_proxy", `{"cluster":"c1"}`), "", c1), false,
			f0 + ".type", "tcp_proxy needs a stream listener"},
		{"two terminal filters", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}},{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".filter_chains[0].filters[1].type", "a second terminal filter (filters[0] is tcp_proxy already)"},
		{"empty filter chain", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[]}]}`, "", c1), false,
			l0 + ".filter_chains[0].filters", "empty"},
		{"strict unknown field", doc(`{"name":"l","address":"127.0.0.1:1","log_pth":"stdout","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), true,
			l0 + ".log_pth", "unknown field (did you mean log_path?)"},
		{"strict unknown field in filter config", doc(filterListener("tcp", "tcp_proxy", `{"cluster":"c1","clusters":["c1"]}`), "", c1), true,
			f0 + ".config.clusters", "unknown field"},
		{"strict duplicate key", `{"drain":{"timeout":"1s","Timeout":"2s"}}`, true, "drain.timeout", "duplicate key"},
		{"two servers", `{"servers":[{},{}]}`, false, "servers", "mosnlite runs exactly one"},
		{"duplicate router", doc(httpProxy, router1+","+router1, c1), false, "servers[0].routers[1].router_config_name", `duplicate router_config_name "r1"`},
		{"virtual host without domains", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"name":"vh","routers":[{"route":{"cluster_name":"c1"}}]}]}`, c1), false,
			"servers[0].routers[0].virtual_hosts[0].domains", "a virtual host needs at least one domain"},
		{"duplicate cluster", doc(httpProxy, router1, c1+","+c1), false, cluster + "[1].name", `duplicate cluster name "c1" (also cluster_manager.clusters[0])`},
		{"empty cluster name", doc(httpProxy, router1, c1+`,{"hosts":[{"address":"127.0.0.1:9"}]}`), false, cluster + "[1].name", "missing"},
		{"bad header regex", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"match":{"headers":[{"name":"service","value":"com.(foo"}]},"route":{"cluster_name":"c1"}}]}]}`, c1), false,
			route0 + ".match.headers[0].value", `invalid regex "com.(foo"`},
		{"direct response status", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"direct_response":{"status":700}}]}]}`, c1), false,
			route0 + ".direct_response.status", "700 is outside 100-599"},
		{"negative max_connections", doc(`{"name":"l","address":"127.0.0.1:1","max_connections":-1,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".max_connections", "must not be negative"},
		{"send_timeout under a millisecond", doc(`{"name":"l","address":"127.0.0.1:1","send_timeout":"500us","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".send_timeout", "500µs is out of range: 1ms to 596h31m23.647s, or 0s for off"},
		{"send_timeout over the kernel's limit", doc(`{"name":"l","address":"127.0.0.1:1","send_timeout":"600h","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".send_timeout", "600h0m0s is out of range"},
		{"unknown metrics sink", `{"metrics":{"sinks":[{"type":"statsd"}]}}`, false, "metrics.sinks[0].type", `unknown "statsd" (known: prometheus)`},
		{"unknown extend", `{"extends":[{"type":"nacos"}]}`, false, "extends[0].type", `unknown "nacos" (known: dubbo_registry)`},
		{"admin port", `{"admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":70000}}}}`, false,
			"admin.address.socket_address.port_value", "70000 is not a port"},
		{"number too big", `{"cluster_manager":{"clusters":[{"name":"c","max_connect_attempts":4294967296}]}}`, false,
			cluster + "[0].max_connect_attempts", "out of range for uint32"},
		{"unknown log level", `{"servers":[{"default_log_level":"LOUD"}]}`, false, "servers[0].default_log_level", `unknown "LOUD"`},
		{"two cluster choices", routeDoc(`{"route":{"cluster_name":"c1","cluster_header":"x-cluster"}}`), false, route0 + ".route", "set only one of cluster_name, cluster_header, weighted_clusters"},
		{"no cluster choice", routeDoc(`{"route":{"timeout":"1s"}}`), false, route0 + ".route.cluster_name", "missing: set one of"},
		{"weights sum to zero", routeDoc(`{"route":{"weighted_clusters":[{"cluster":{"name":"c1"}},{"cluster":{"name":"c2"}}]}}`), false, route0 + ".route.weighted_clusters", "weights sum to 0"},
		{"two rewrites", routeDoc(`{"route":{"cluster_name":"c1","prefix_rewrite":"/a","regex_rewrite":{"pattern":{"regex":"^/b"},"substitution":"/"}}}`), false, route0 + ".route", "set only one of prefix_rewrite, regex_rewrite"},
		{"bad rewrite regex", routeDoc(`{"route":{"cluster_name":"c1","regex_rewrite":{"pattern":{"regex":"*"}}}}`), false, route0 + ".route.regex_rewrite.pattern.regex", "invalid regex"},
		{"empty hash policy", routeDoc(`{"route":{"cluster_name":"c1","hash_policy":[{}]}}`), false, route0 + ".route.hash_policy[0]", "set one of header, cookie, source_ip, http_query_parameter"},
		{"hash header without key", routeDoc(`{"route":{"cluster_name":"c1","hash_policy":[{"header":{}}]}}`), false, route0 + ".route.hash_policy[0].header.key", "missing"},
		{"retriable status", routeDoc(`{"route":{"cluster_name":"c1","retry_policy":{"retriable_status_codes":[503,42]}}}`), false, route0 + ".route.retry_policy.retriable_status_codes[1]", "42 is outside 100-599"},
		{"route upstream protocol", routeDoc(`{"route":{"cluster_name":"c1","upstream_protocol":"Http9"}}`), false, route0 + ".route.upstream_protocol", `unknown "Http9"`},
		{"header to add without key", routeDoc(`{"route":{"cluster_name":"c1","request_headers_to_add":[{"header":{"value":"v"}}]}}`), false, route0 + ".route.request_headers_to_add[0].header.key", "missing"},
		{"header to add missing", routeDoc(`{"route":{"cluster_name":"c1"},"response_headers_to_add":[{"append":true}]}`), false, route0 + ".response_headers_to_add[0].header", "missing"},
		{"two actions", routeDoc(`{"route":{"cluster_name":"c1"},"direct_response":{"status":200}}`), false, route0, "set only one of route, direct_response, redirect"},
		{"two path matchers", routeDoc(`{"match":{"prefix":"/","path":"/a"},"route":{"cluster_name":"c1"}}`), false, route0 + ".match", "set only one of prefix, path, regex"},
		{"bad path regex", routeDoc(`{"match":{"regex":"(("},"route":{"cluster_name":"c1"}}`), false, route0 + ".match.regex", "invalid regex"},
		{"header matcher without name", routeDoc(`{"match":{"headers":[{"value":"x","regex":false}]},"route":{"cluster_name":"c1"}}`), false, route0 + ".match.headers[0].name", "missing"},
		{"bad redirect code", routeDoc(`{"redirect":{"response_code":200}}`), false, route0 + ".redirect.response_code", "200 is not a redirect status"},
		{"bad redirect scheme", routeDoc(`{"redirect":{"scheme_redirect":"ftp"}}`), false, route0 + ".redirect.scheme_redirect", `unknown "ftp"`},
		{"mirror percent", routeDoc(`{"route":{"cluster_name":"c1"},"request_mirror_policies":{"cluster":"c2","percent":101}}`), false, route0 + ".request_mirror_policies.percent", "101 is over 100"},
		{"duplicate domain", doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["a.example"]},{"domains":["A.example"]}]}`, c1), false,
			"servers[0].routers[0].virtual_hosts[1].domains[0]", `domain "A.example" is also in servers[0].routers[0].virtual_hosts[0].domains[0]`},
		{"lb original dst on simple", clusterDoc(`{"name":"c","lb_type":"LB_ORIGINAL_DST","hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].lb_type", "LB_ORIGINAL_DST needs a cluster of type ORIGINAL_DST"},
		{"strict dns without hosts", clusterDoc(`{"name":"c","type":"STRICT_DNS"}`), false, cluster + "[0].hosts", "needs at least one host:port"},
		{"strict dns refresh 0", clusterDoc(`{"name":"c","type":"STRICT_DNS","dns_refresh_rate":"0s","hosts":[{"address":"a.example:80"}]}`), false, cluster + "[0].dns_refresh_rate", "must be positive"},
		{"connect timeout 0", clusterDoc(`{"name":"c","connect_timeout":"0s","hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].connect_timeout", "must be positive"},
		{"dns lookup family", clusterDoc(`{"name":"c","dns_lookup_family":"V5_ONLY","hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].dns_lookup_family", `unknown "V5_ONLY" (known: V4_ONLY, V6_ONLY, AUTO)`},
		{"circuit breaker priority", clusterDoc(`{"name":"c","circuit_breakers":[{"priority":"LOW"}],"hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].circuit_breakers[0].priority", `unknown "LOW"`},
		{"maglev table not prime", clusterDoc(`{"name":"c","lb_type":"LB_MAGLEV","lbconfig":{"maglev_table_size":65536},"hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].lbconfig.maglev_table_size", "65536 is not prime"},
		{"maglev table too big", clusterDoc(`{"name":"c","lbconfig":{"maglev_table_size":18446744073709551557},"hosts":[{"address":"127.0.0.1:1"}]}`), false, cluster + "[0].lbconfig.maglev_table_size", "over the limit"},
		{"simple host port 0", clusterDoc(`{"name":"c","hosts":[{"address":"127.0.0.1:0"}]}`), false, cluster + "[0].hosts[0].address", "not ip:port with a port in 1-65535"},
		{"tls without cert", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"tls_context":{"status":true},"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".filter_chains[0].tls_context", "cert_chain or private_key is missing"},
		{"cluster tls half a client cert", clusterDoc(`{"name":"c","tls_context":{"status":true,"cert_chain":"c.pem"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].tls_context", "needs both cert_chain and private_key"},
		{"unix path too long", doc(`{"name":"l","network":"unix","address":"/`+strings.Repeat("x", 120)+`","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".address", "the limit is 107"},
		{"duplicate unix path", doc(`{"name":"a","network":"unix","address":"/run/a.sock","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]},{"name":"b","network":"unix","address":"/run/a.sock","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			"servers[0].listeners[1].address", "already bound"},
		{"original dst on udp", doc(`{"name":"l","network":"udp","address":"127.0.0.1:1","use_original_dst":"redirect","filter_chains":[{"filters":[{"type":"udp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".use_original_dst", "original destination needs a tcp listener, not udp"},
		{"original dst modes disagree", doc(`{"name":"l","address":"127.0.0.1:1","use_original_dst":"redirect","listener_filters":[{"type":"original_dst","config":{"type":"tproxy"}}],"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".listener_filters[0].config.type", `"tproxy" contradicts the listener's use_original_dst "redirect"`},
		{"access log without path", doc(`{"name":"l","address":"127.0.0.1:1","access_logs":[{"log_format":"%start_time%"}],"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			l0 + ".access_logs[0].log_path", "missing"},
		{"listener without filter chains", doc(`{"name":"l","address":"127.0.0.1:1"}`, "", ""), false, l0 + ".filter_chains", "missing"},
		{"duplicate virtual listener", doc(`{"name":"a","address":"0.0.0.0:80","bind_port":false,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]},{"name":"b","address":"0.0.0.0:80","bind_port":false,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1), false,
			"servers[0].listeners[1].address", "virtual listener"},
		{"udp max sessions", doc(filterListener("udp", "udp_proxy", `{"cluster":"c1","max_sessions":-1}`), "", c1), false, f0 + ".config.max_sessions", "must not be negative"},
		{"health check protocol", clusterDoc(`{"name":"c","health_check":{"protocol":"bolt"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.protocol", `unknown "bolt" (known: tcp, http, Http1)`},
		{"health check timeout 0", clusterDoc(`{"name":"c","health_check":{"timeout":"0s"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.timeout", "must be positive"},
		{"health check interval 0", clusterDoc(`{"name":"c","health_check":{"interval":"0s"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.interval", "must be positive"},
		{"health check bad interval", clusterDoc(`{"name":"c","health_check":{"interval":"often"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.interval", `invalid duration "often"`},
		{"health check threshold type", clusterDoc(`{"name":"c","health_check":{"healthy_threshold":-1},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.healthy_threshold", "expected a non-negative integer"},
		{"http check path", clusterDoc(`{"name":"c","health_check":{"protocol":"http","check_config":{"http_check_config":{"path":"status"}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.http_check_config.path", `"status" is not a path starting with /`},
		{"http check port", clusterDoc(`{"name":"c","health_check":{"protocol":"http","check_config":{"http_check_config":{"port":70000}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.http_check_config.port", "70000 is not a port"},
		{"http check scheme", clusterDoc(`{"name":"c","health_check":{"protocol":"http","check_config":{"http_check_config":{"scheme":"https"}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.http_check_config.scheme", "not supported"},
		{"http check method", clusterDoc(`{"name":"c","health_check":{"protocol":"http","check_config":{"http_check_config":{"method":"GET /"}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.http_check_config.method", "not an HTTP method"},
		{"http check codes", clusterDoc(`{"name":"c","health_check":{"protocol":"http","check_config":{"http_check_config":{"codes":[{"Start":200,"End":299},{"Start":500}]}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.http_check_config.codes[1].end", "0 is outside 100-599"},
		{"tcp check hex", clusterDoc(`{"name":"c","health_check":{"check_config":{"tcp_check_config":{"send":"PING"}}},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].health_check.check_config.tcp_check_config.send", `"PING" is not a hex string`},
		{"outlier two thresholds", clusterDoc(`{"name":"c","outlier_detection":{"consecutive_5xx":5,"consecutive_errors":3},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].outlier_detection.consecutive_errors", "set only one"},
		{"outlier percent", clusterDoc(`{"name":"c","outlier_detection":{"max_ejection_percent":150},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].outlier_detection.max_ejection_percent", "150 is over 100"},
		{"outlier base 0", clusterDoc(`{"name":"c","outlier_detection":{"base_ejection_time":"0s"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].outlier_detection.base_ejection_time", "must be positive"},
		{"outlier max below base", clusterDoc(`{"name":"c","outlier_detection":{"base_ejection_time":"1m","max_ejection_time":"30s"},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].outlier_detection.max_ejection_time", "shorter than base_ejection_time 1m0s"},
		{"outlier interval type", clusterDoc(`{"name":"c","outlier_detection":{"interval":true},"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].outlier_detection.interval", "expected a string"},
		{"circuit breaker negative", clusterDoc(`{"name":"c","circuit_breakers":[{"max_connections":-1}],"hosts":[{"address":"127.0.0.1:1"}]}`), false,
			cluster + "[0].circuit_breakers[0].max_connections", "expected a non-negative integer"},
		{"strict unknown health check field", clusterDoc(`{"name":"c","health_check":{"intervall":"1s"},"hosts":[{"address":"127.0.0.1:1"}]}`), true,
			cluster + "[0].health_check.intervall", "did you mean interval?"},
		{"tcp_proxy bad cidr", doc(filterListener("tcp", "tcp_proxy", `{"routes":[{"cluster":"c1","source_addrs":[{"address":"10.0.0.0","length":33}]}]}`), "", c1), false,
			f0 + ".config.routes[0].source_addrs[0].length", "33 is longer than the 32 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			warnings, errs := check(t, tc.data, tc.strict)
			if !find(errs, tc.path, tc.phrase) {
				t.Errorf("want an error at %s containing %q\nerrors:\n%v\nwarnings: %v", tc.path, tc.phrase, errs, warnings)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, data, path, phrase string
	}{
		{"unknown field", doc(`{"name":"l","address":"127.0.0.1:1","log_pth":"x","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1),
			"servers[0].listeners[0].log_pth", "unknown field, ignored (did you mean log_path?)"},
		{"camelCase field", `{"cluster_manager":{"clusters":[{"name":"c","type":"STRICT_DNS","dnsRefreshRate":"1s","hosts":[{"address":"a.example:80"}]}]}}`,
			"cluster_manager.clusters[0].dnsRefreshRate", "did you mean dns_refresh_rate?"},
		{"unknown field in filter config", doc(filterListener("tcp", "tcp_proxy", `{"clustr":"c1","cluster":"c1"}`), "", c1),
			"servers[0].listeners[0].filter_chains[0].filters[0].config.clustr", "did you mean cluster?"},
		{"duplicate key", `{"drain":{"timeout":"1s","timeout":"2s"}}`, "drain.timeout", "duplicate key; the last one wins"},
		{"healthcheck", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"bolt","router_config_name":"r1"}}]}],"stream_filters":[{"type":"healthcheck","config":{}}]}`, router1, c1),
			"servers[0].listeners[0].stream_filters[0].type", `"healthcheck" was removed from MOSN; ignored`},
		{"EDS hosts", `{"dynamic_resources":{},"cluster_manager":{"clusters":[{"name":"c","type":"EDS","hosts":[{"address":"127.0.0.1:1"}]}]}}`,
			"cluster_manager.clusters[0].hosts", "EDS cluster takes its hosts from xDS"},
		{"dangling with xDS", `{"dynamic_resources":{"ads_config":{}},"servers":[{"listeners":[` + filterListener("tcp", "tcp_proxy", `{"cluster":"from_cds"}`) + `]}]}`,
			"servers[0].listeners[0].filter_chains[0].filters[0].config.cluster", "expected from dynamic_resources"},
		{"admin on all interfaces", `{"admin":{"address":{"socket_address":{"address":"0.0.0.0","port_value":34901}}}}`,
			"admin.address.socket_address.address", "reachable from the network"},
		{"retry_on without num_retries", `{"servers":[{"routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"c1","retry_policy":{"retry_on":true}}}]}]}]}],"cluster_manager":{"clusters":[{"name":"c1","hosts":[{"address":"127.0.0.1:1"}]}]}}`,
			"servers[0].routers[0].virtual_hosts[0].routers[0].route.retry_policy.num_retries", "nothing will be retried"},
		{"health check callbacks", clusterDoc(`{"name":"c","health_check":{"common_callbacks":["x"]},"hosts":[{"address":"127.0.0.1:1"}]}`),
			"cluster_manager.clusters[0].health_check.common_callbacks", "not supported; ignored"},
		{"http check config under tcp", clusterDoc(`{"name":"c","health_check":{"protocol":"tcp","check_config":{"http_check_config":{"path":"/"}}},"hosts":[{"address":"127.0.0.1:1"}]}`),
			"cluster_manager.clusters[0].health_check.check_config.http_check_config", "ignored: the protocol is tcp"},
		{"high priority breaker", clusterDoc(`{"name":"c","circuit_breakers":[{"priority":"HIGH","max_connections":5}],"hosts":[{"address":"127.0.0.1:1"}]}`),
			"cluster_manager.clusters[0].circuit_breakers[0].priority", "HIGH thresholds are not used"},
		{"breaker max_connections 0", clusterDoc(`{"name":"c","circuit_breakers":[{"max_connections":0}],"hosts":[{"address":"127.0.0.1:1"}]}`),
			"cluster_manager.clusters[0].circuit_breakers[0].max_connections", "0 refuses every upstream connection"},
		{"breaker max_requests 0", clusterDoc(`{"name":"c","circuit_breakers":[{"priority":"DEFAULT","max_requests":0}],"hosts":[{"address":"127.0.0.1:1"}]}`),
			"cluster_manager.clusters[0].circuit_breakers[0].max_requests", "0 refuses every request"},
		{"ORIGINAL_DST without hosts", clusterDoc(`{"name":"c","type":"ORIGINAL_DST"}`),
			"cluster_manager.clusters[0].hosts", "chooses among its listed hosts"},
		{"second filter chain", doc(`{"name":"l","address":"127.0.0.1:1","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]},{"filters":[{"type":"tcp_proxy","config":{"cluster":"c1"}}]}]}`, "", c1),
			"servers[0].listeners[0].filter_chains[1]", "filter_chains[0] only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			warnings, errs := check(t, tc.data, false)
			if len(errs) > 0 {
				t.Fatalf("errors:\n%v", errs)
			}
			if !find(warnings, tc.path, tc.phrase) {
				t.Errorf("want a warning at %s containing %q; got %v", tc.path, tc.phrase, warnings)
			}
		})
	}
}

func TestHealthOutlierBreakerBlocks(t *testing.T) {
	// MOSN's health_check block (its codes are {"Start","End"}), Envoy's outlier_detection and
	// circuit_breakers: strict, no warning, and typed as written.
	data := doc(filterListener("tcp", "tcp_proxy", `{"cluster":"c"}`), "", `{"name":"c","hosts":[{"address":"127.0.0.1:1"}],
		"health_check":{"protocol":"Http1","timeout":"2s","interval":"5s","interval_jitter":"1s","initial_delay_seconds":"3s",
			"healthy_threshold":2,"unhealthy_threshold":3,"service_name":"c-hc",
			"check_config":{"http_check_config":{"port":8081,"timeout":"1s","path":"/health?full=1","method":"HEAD","scheme":"http","domain":"svc.example",
				"codes":[{"Start":200,"End":299}]}}},
		"outlier_detection":{"consecutive_5xx":7,"interval":"5s","base_ejection_time":"10s","max_ejection_time":"1m","max_ejection_percent":0},
		"circuit_breakers":[{"priority":"DEFAULT","max_connections":10,"max_pending_requests":20,"max_requests":30,"max_retries":4}]}`)
	if w, errs := check(t, data, true); len(errs) > 0 || len(w) > 0 {
		t.Fatalf("warnings %v\nerrors:\n%v", w, errs)
	}
	c, _, err := config.Parse([]byte(data), config.ParseOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	cl := c.ClusterManager.Clusters[0]
	hc, od := cl.HealthCheck, cl.OutlierDetection
	if hc == nil || od == nil || hc.CheckConfig == nil || hc.CheckConfig.HTTP == nil {
		t.Fatalf("blocks not decoded: %+v %+v", hc, od)
	}
	h := hc.CheckConfig.HTTP
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"protocol", hc.Protocol, "Http1"},
		{"interval", hc.Interval.D(), 5 * time.Second},
		{"initial delay", hc.InitialDelay.D(), 3 * time.Second},
		{"unhealthy", hc.UnhealthyThreshold, uint32(3)},
		{"port", h.Port, uint32(8081)},
		{"codes", h.Codes, []config.StatusRange{{Start: 200, End: 299}}},
		{"threshold", od.Threshold(), uint32(7)},
		{"max percent 0 kept", *od.MaxEjectionPercent, uint32(0)},
		{"base", od.BaseEjectionTime.D(), 10 * time.Second},
		{"breaker", *cl.CircuitBreakers[0].MaxRetries, uint32(4)},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v; want %v", tc.name, tc.got, tc.want)
		}
	}
	if p, ok := config.HealthCheckProtocol("HTTP1"); !ok || p != "http" {
		t.Errorf("HealthCheckProtocol(HTTP1) = %q, %v", p, ok)
	}
	if (&config.OutlierDetection{}).Threshold() != 5 || (&config.OutlierDetection{ConsecutiveErrors: 2}).Threshold() != 2 {
		t.Error("Threshold defaults")
	}
}

// A circuit breaker threshold written as 0 stays 0 (a limit, Envoy's semantics) and one
// left out stays nil (the default); max_retries 0 draws no warning.
func TestBreakerZeroIsAThreshold(t *testing.T) {
	data := doc(filterListener("tcp", "tcp_proxy", `{"cluster":"c"}`), "", `{"name":"c","circuit_breakers":[{"max_retries":0,"max_pending_requests":0}],"hosts":[{"address":"127.0.0.1:1"}]}`)
	if w, errs := check(t, data, true); len(errs) > 0 || len(w) > 0 {
		t.Fatalf("warnings %v\nerrors:\n%v", w, errs)
	}
	c, _, err := config.Parse([]byte(data), config.ParseOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	cb := c.ClusterManager.Clusters[0].CircuitBreakers[0]
	if cb.MaxRetries == nil || *cb.MaxRetries != 0 || cb.MaxPendingRequests == nil || *cb.MaxPendingRequests != 0 {
		t.Errorf("max_retries %v, max_pending_requests %v; want both 0", cb.MaxRetries, cb.MaxPendingRequests)
	}
	if cb.MaxConnections != nil || cb.MaxRequests != nil {
		t.Errorf("absent thresholds decoded as %v, %v; want nil", cb.MaxConnections, cb.MaxRequests)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	data := doc(filterListener("tcp", "tcp_proxy", `{"cluster":"ghost"}`), "",
		`{"name":"c1","lb_type":"LB_FOO","hosts":[{"address":"nope"}]},{"name":"c1","type":"WEIRD"}`)
	_, errs := check(t, data, false)
	for _, want := range []string{
		"servers[0].listeners[0].filter_chains[0].filters[0].config.cluster",
		"cluster_manager.clusters[0].lb_type",
		"cluster_manager.clusters[0].hosts[0].address",
		"cluster_manager.clusters[1].name",
		"cluster_manager.clusters[1].type",
	} {
		if !find(errs, want, "") {
			t.Errorf("no error at %s; got:\n%v", want, errs)
		}
	}
	if lines := strings.Count(errs.Error(), "\n") + 1; lines != len(errs) {
		t.Errorf("Problems.Error has %d lines for %d problems", lines, len(errs))
	}
}

func TestValidateDoesNotMutate(t *testing.T) {
	c, _, err := config.Load("testdata/mosn/mirror_http2_dubbo_config.json", config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	before, _ := json.Marshal(c)
	if _, err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(c)
	if string(before) != string(after) {
		t.Errorf("Validate changed the config:\n%s\n%s", before, after)
	}
}

func TestValidateConfigBuiltInCode(t *testing.T) {
	neg := config.Duration(-1)
	c := &config.Config{ClusterManager: config.ClusterManager{Clusters: []config.Cluster{{
		Name: "c", PickTimeout: &neg, Hosts: []config.Host{{Address: "127.0.0.1:1"}},
	}}}}
	c.Servers = []config.Server{{Listeners: []config.Listener{{
		Name: "l", Address: "127.0.0.1:1", UseOriginalDst: "dnat",
		FilterChains: []config.FilterChain{{Filters: []config.TypedConfig{{Type: "tcp_proxy", Config: config.RawMessage(`{"cluster":[1]}`)}}}},
	}}}}
	c.ApplyDefaults()
	_, err := c.Validate()
	var errs config.Problems
	if !errors.As(err, &errs) {
		t.Fatalf("Validate = %v, want Problems", err)
	}
	for _, want := range []struct{ path, phrase string }{
		{"cluster_manager.clusters[0].pick_timeout", "negative duration"},
		{"servers[0].listeners[0].use_original_dst", `unknown "dnat"`},
		{"servers[0].listeners[0].filter_chains[0].filters[0].config.cluster", "expected a string, got array"},
	} {
		if !find(errs, want.path, want.phrase) {
			t.Errorf("no %q at %s; got:\n%v", want.phrase, want.path, errs)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	for _, tc := range []struct {
		value, sub string
		want       string // fmt of the choice, or "error: phrase"
	}{
		{"Http1", "", "{[Http1] false}"},
		{"http2", "", "{[Http2] false}"},
		{"AUTO", "", "{[] true}"},
		{"Http1,Http2", "", "{[Http1 Http2] true}"},
		{"http1, bolt", "", "{[Http1 bolt] true}"},
		{"X", "dubbo", "{[dubbo] false}"},
		{"x", "bolt,boltv2", "{[bolt boltv2] true}"},
		{"BOLT", "", "{[bolt] false}"},
		{"", "", "{[] false}"},
		{"X", "", "error: needs extend_config.sub_protocol"},
		{"X", "thrift", `error: unknown "thrift"`},
		{"Http1,Auto", "", "error: Auto cannot be part of a protocol list"},
		{"Http1,,Http2", "", "error: empty name"},
		{"Http1,http1", "", "error: Http1 twice"},
		{"Http3", "", `error: unknown "Http3"`},
	} {
		got, err := config.ParseProtocol(tc.value, tc.sub)
		s := fmt.Sprintf("%v", got)
		if err != nil {
			s = "error: " + err.Error()
		}
		if s != tc.want && !(strings.HasPrefix(tc.want, "error: ") && strings.Contains(s, strings.TrimPrefix(tc.want, "error: "))) {
			t.Errorf("ParseProtocol(%q, %q) = %s; want %s", tc.value, tc.sub, s, tc.want)
		}
	}
}

func TestHeaderMatcherIsRegex(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		regex *bool
		want  bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		if got := (config.HeaderMatcher{Regex: tc.regex}).IsRegex(); got != tc.want {
			t.Errorf("IsRegex with regex=%v = %v", tc.regex, got)
		}
	}
	// An exact matcher may hold any text, regex or not.
	data := doc(httpProxy, `{"router_config_name":"r1","virtual_hosts":[{"domains":["*"],"routers":[{"match":{"headers":[{"name":"x","value":"a(b","regex":false}]},"route":{"cluster_name":"c1"}}]}]}`, c1)
	if _, errs := check(t, data, false); len(errs) > 0 {
		t.Errorf("exact header value checked as a regex: %v", errs)
	}
}
