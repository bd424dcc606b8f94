package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

// mosnliteConf is a MOSN v2 config with one proxy listener per protocol: bolt
// (downstream_protocol bolt), dubbo (X with sub_protocol dubbo, as MOSN writes it) and
// HTTP/1.1, each routed to the bench's upstream for it.
func mosnliteConf(listen, upstream map[string]string, admin string) ([]byte, error) {
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		return nil, err
	}
	portNum, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	type m = map[string]any
	header := func(name, value string) []m { return []m{{"name": name, "value": value, "regex": false}} }
	routers := []m{
		{"router_config_name": "bolt", "virtual_hosts": []m{{"name": "bolt", "domains": []string{"*"},
			"routers": []m{{"match": m{"headers": header("service", benchBoltService)}, "route": m{"cluster_name": "bolt"}}}}}},
		{"router_config_name": "dubbo", "virtual_hosts": []m{{"name": "dubbo", "domains": []string{"*"},
			"routers": []m{{"match": m{"headers": header("service", benchDubboService)}, "route": m{"cluster_name": "dubbo"}}}}}},
		{"router_config_name": "http1", "virtual_hosts": []m{{"name": "http1", "domains": []string{"*"},
			"routers": []m{{"match": m{"prefix": "/"}, "route": m{"cluster_name": "http1"}}}}}},
	}
	listener := func(name string, proxy m) m {
		return m{"name": name, "address": listen[name], "bind_port": true,
			"filter_chains": []m{{"filters": []m{{"type": "proxy", "config": proxy}}}}}
	}
	var listeners []m
	var clusters []m
	for _, p := range []string{protoBolt, protoDubbo, protoHTTP1} {
		if listen[p] == "" {
			continue
		}
		var pc m
		switch p {
		case protoBolt:
			pc = m{"downstream_protocol": "bolt", "router_config_name": "bolt"}
		case protoDubbo:
			pc = m{"downstream_protocol": "X", "extend_config": m{"sub_protocol": "dubbo"}, "router_config_name": "dubbo"}
		case protoHTTP1:
			pc = m{"downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "http1"}
		}
		listeners = append(listeners, listener(p, pc))
		clusters = append(clusters, m{"name": p, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "1s",
			"hosts": []m{{"address": upstream[p]}}})
	}
	cfg := m{
		"servers":         []m{{"default_log_path": "stdout", "routers": routers, "listeners": listeners}},
		"cluster_manager": m{"clusters": clusters},
		"admin":           m{"address": m{"socket_address": m{"address": host, "port_value": portNum}}},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startMosnlite validates a generated config and runs `mosnlite --log-level warn start -c`
// pinned to cpu; it returns the listener address per protocol.
func startMosnlite(ctx context.Context, bin, dir, cpu string, upstream map[string]string) (*benchproc.Proc, map[string]string, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, nil, fmt.Errorf("mosnlite binary: %w (run `make build`)", err)
	}
	listen := map[string]string{}
	for p := range upstream {
		a, err := benchproc.FreePort()
		if err != nil {
			return nil, nil, err
		}
		listen[p] = a
	}
	admin, err := benchproc.FreePort()
	if err != nil {
		return nil, nil, err
	}
	conf, err := mosnliteConf(listen, upstream, admin)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "mosnlite.json")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return nil, nil, err
	}
	if out, err := exec.Command(bin, "validate", "-c", path).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("mosnlite validate -c %s: %w\n%s", path, err, out)
	}
	version := "unknown"
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	cmd, err := benchproc.Command(cpu, bin, "--log-level", "warn", "start", "-c", path)
	if err != nil {
		return nil, nil, err
	}
	p, err := benchproc.Launch("mosnlite", cmd, filepath.Join(dir, "mosnlite.out"))
	if err != nil {
		return nil, nil, err
	}
	p.Version = version
	addrs := make([]string, 0, len(listen))
	for _, a := range listen {
		addrs = append(addrs, a)
	}
	if err := p.WaitListening(ctx, 15*time.Second, addrs...); err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, nil, err
	}
	return p, listen, nil
}
