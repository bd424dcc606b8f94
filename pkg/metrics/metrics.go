// Package metrics defines every metric mosnlite exports, once, on a registry owned by the
// server. Components receive the *Set and resolve their labelled children when they are
// built (per listener, per cluster), so the hot path only does an atomic add.
//
// Names follow DESIGN.md: mosnlite_*, base units, _total for counters.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Set is the collection of vectors. New registers all of them on a fresh registry.
type Set struct {
	Registry *prometheus.Registry

	// Downstream (per listener).
	DownstreamCxTotal    *prometheus.CounterVec // listener
	DownstreamCxActive   *prometheus.GaugeVec   // listener
	DownstreamCxOverflow *prometheus.CounterVec // listener: accepts held back by max_connections
	AcceptOverload       *prometheus.CounterVec // listener: times accepting paused for memory overload
	MemoryOverloaded     prometheus.Gauge       // 1 while memory is near its limit and listeners do not accept
	DownstreamCxHandoff  *prometheus.CounterVec // listener: connections handed to it by original_dst
	AcceptErrors         *prometheus.CounterVec // listener
	ConnPanics           *prometheus.CounterVec // listener: recovered panics (bug), conn closed
	ConnCloses           *prometheus.CounterVec // listener, reason
	ProtocolErrors       *prometheus.CounterVec // listener, protocol: malformed input, conn closed
	HTTPLoopHandoffs     *prometheus.CounterVec // listener, reason: HTTP/1 connections moved from an event loop to a goroutine

	// Upstream (per cluster).
	UpstreamCxTotal       *prometheus.CounterVec // cluster
	UpstreamCxActive      *prometheus.GaugeVec   // cluster
	UpstreamCxConnectFail *prometheus.CounterVec // cluster, host
	UpstreamNoHealthy     *prometheus.CounterVec // cluster: picks that found no host up in time
	UpstreamHosts         *prometheus.GaugeVec   // cluster
	UpstreamHostsHealthy  *prometheus.GaugeVec   // cluster
	DNSResolveFailures    *prometheus.CounterVec // cluster
	UpstreamHealthChecks  *prometheus.CounterVec // cluster, result (success | failure)
	UpstreamEjections     *prometheus.CounterVec // cluster: hosts ejected by outlier detection
	UpstreamHostsEjected  *prometheus.GaugeVec   // cluster: hosts ejected now
	UpstreamOverflow      *prometheus.CounterVec // cluster, breaker (connections | pending | requests | retries | retry_budget)
	UpstreamRetries       *prometheus.CounterVec // cluster: HTTP retries made by the proxy
	UpstreamMirrors       *prometheus.CounterVec // cluster, result (sent | dropped | failed): mirrored requests

	// L4 filters.
	TCPProxyBytes     *prometheus.CounterVec // listener, cluster, direction (rx: client→upstream, tx: upstream→client)
	TCPProxySessions  *prometheus.CounterVec // listener, cluster
	UDPProxyDatagrams *prometheus.CounterVec // listener, cluster, direction
	UDPProxyBytes     *prometheus.CounterVec // listener, cluster, direction
	UDPProxySessions  *prometheus.CounterVec // listener, cluster
	UDPProxyActive    *prometheus.GaugeVec   // listener, cluster
	UDPProxyDropped   *prometheus.CounterVec // listener, cluster, reason

	// RPC (xprotocol: bolt, boltv2, dubbo).
	RPCRequests *prometheus.CounterVec // listener, protocol: requests decoded (one-way included)
	RPCFailures *prometheus.CounterVec // listener, protocol, cause: requests answered by the proxy, frames refused

	// Config.
	ConfigReloads    *prometheus.CounterVec // result: success | failure
	ConfigLastReload prometheus.Gauge       // unix time of the last successful reload

	// xDS.
	XDSUpdates     *prometheus.CounterVec // type (CDS | EDS | LDS | RDS), result (ack | nack)
	XDSConnected   prometheus.Gauge       // 1 while the ADS stream is open
	XDSDisconnects prometheus.Counter     // ADS streams that ended after opening, other than at shutdown

	// Dubbo registry endpoint.
	RegistryRequests *prometheus.CounterVec // op (pub | unpub | sub | unsub), result (success | failure)
	RegistryUpdates  *prometheus.CounterVec // result: provider changes applied to clusters (success | failure)

	// Vectors by the entity whose removal deletes their series (lifecycle.go), filled by
	// the factory from each vector's labels.
	byCluster, byListener []scopedVec
}

// New builds a Set on a fresh registry (with the Go and process collectors).
func New() *Set {
	r := prometheus.NewRegistry()
	f := &factory{r: r}
	s := &Set{
		Registry:              r,
		DownstreamCxTotal:     f.counter("downstream_connections_total", "Downstream connections accepted.", "listener"),
		DownstreamCxActive:    f.gauge("downstream_connections_active", "Downstream connections open.", "listener"),
		DownstreamCxOverflow:  f.counter("downstream_connections_overflow_total", "Times accepting paused because max_connections was reached.", "listener"),
		AcceptOverload:        f.counter("downstream_accept_overload_pauses_total", "Times accepting paused because memory neared its limit (GOMEMLIMIT).", "listener"),
		MemoryOverloaded:      f.plainGauge("memory_overloaded", "1 while memory is near its limit (GOMEMLIMIT) and listeners accept no new connection."),
		DownstreamCxHandoff:   f.counter("downstream_connections_handoff_total", "Connections handed to this listener by original_dst.", "listener"),
		AcceptErrors:          f.counter("accept_errors_total", "Errors returned by accept.", "listener"),
		ConnPanics:            f.counter("connection_panics_total", "Recovered panics in connection handlers; the connection was closed.", "listener"),
		ConnCloses:            f.counter("downstream_connection_closes_total", "Downstream connections closed, by reason.", "listener", "reason"),
		ProtocolErrors:        f.counter("protocol_errors_total", "Malformed input that closed a connection.", "listener", "protocol"),
		HTTPLoopHandoffs:      f.counter("http1_loop_handoffs_total", "HTTP/1 connections moved from an event loop to a goroutine for a request the loop does not serve.", "listener", "reason"),
		UpstreamCxTotal:       f.counter("upstream_connections_total", "Upstream connections established.", "cluster"),
		UpstreamCxActive:      f.gauge("upstream_connections_active", "Upstream connections open.", "cluster"),
		UpstreamCxConnectFail: f.counter("upstream_connect_failures_total", "Failed upstream dials.", "cluster", "host"),
		UpstreamNoHealthy:     f.counter("upstream_no_healthy_host_total", "Picks that found no healthy host within the pick timeout.", "cluster"),
		UpstreamHosts:         f.gauge("upstream_hosts", "Hosts in the cluster.", "cluster"),
		UpstreamHostsHealthy:  f.gauge("upstream_hosts_healthy", "Healthy hosts in the cluster.", "cluster"),
		DNSResolveFailures:    f.counter("dns_resolve_failures_total", "Failed STRICT_DNS lookups (last good hosts kept).", "cluster"),
		UpstreamHealthChecks:  f.counter("upstream_health_check_total", "Active health checks by result.", "cluster", "result"),
		UpstreamEjections:     f.counter("upstream_host_ejections_total", "Hosts ejected by outlier detection.", "cluster"),
		UpstreamHostsEjected:  f.gauge("upstream_hosts_ejected", "Hosts currently ejected by outlier detection.", "cluster"),
		UpstreamOverflow:      f.counter("upstream_overflow_total", "Requests or connections refused by a circuit breaker.", "cluster", "breaker"),
		UpstreamRetries:       f.counter("upstream_retries_total", "HTTP request retries made by the proxy.", "cluster"),
		UpstreamMirrors:       f.counter("upstream_mirrors_total", "Requests mirrored to a shadow cluster, by result.", "cluster", "result"),
		TCPProxyBytes:         f.counter("tcp_proxy_bytes_total", "Bytes carried by tcp_proxy.", "listener", "cluster", "direction"),
		TCPProxySessions:      f.counter("tcp_proxy_sessions_total", "tcp_proxy sessions.", "listener", "cluster"),
		UDPProxyDatagrams:     f.counter("udp_proxy_datagrams_total", "Datagrams carried by udp_proxy.", "listener", "cluster", "direction"),
		UDPProxyBytes:         f.counter("udp_proxy_bytes_total", "Bytes carried by udp_proxy.", "listener", "cluster", "direction"),
		UDPProxySessions:      f.counter("udp_proxy_sessions_total", "udp_proxy client sessions created.", "listener", "cluster"),
		UDPProxyActive:        f.gauge("udp_proxy_sessions_active", "udp_proxy client sessions open.", "listener", "cluster"),
		UDPProxyDropped:       f.counter("udp_proxy_dropped_total", "Datagrams udp_proxy dropped.", "listener", "cluster", "reason"),
		RPCRequests:           f.counter("rpc_requests_total", "RPC requests received downstream (bolt, dubbo).", "listener", "protocol"),
		RPCFailures:           f.counter("rpc_failures_total", "RPC requests the proxy answered itself, and frames it refused, by cause.", "listener", "protocol", "cause"),
		ConfigReloads:         f.counter("config_reloads_total", "Config reloads (SIGHUP, POST /api/v1/reload) by result: success or failure.", "result"),
		ConfigLastReload:      f.plainGauge("config_last_reload_success_timestamp_seconds", "Unix time of the last successful config reload."),
		XDSUpdates:            f.counter("xds_updates_total", "xDS responses by type (CDS, EDS, LDS, RDS) and result: ack (applied) or nack (rejected).", "type", "result"),
		XDSConnected:          f.plainGauge("xds_connected", "1 while the ADS stream to the control plane is open."),
		XDSDisconnects:        f.plainCounter("xds_disconnects_total", "ADS streams to the control plane that ended after opening (broken, reset, given up by keepalive), not counting shutdown; the client reconnects after each."),
		RegistryRequests:      f.counter("dubbo_registry_requests_total", "Dubbo registry API calls by op (pub, unpub, sub, unsub) and result (success, failure).", "op", "result"),
		RegistryUpdates:       f.counter("dubbo_registry_updates_total", "Provider changes the Dubbo registry applied to its clusters, by result.", "result"),
	}
	s.byCluster, s.byListener = f.byCluster, f.byListener
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

type factory struct {
	r                     *prometheus.Registry
	byCluster, byListener []scopedVec
}

func (f *factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mosnlite", Name: name, Help: help}, labels)
	f.r.MustRegister(v)
	f.scope(scopedVec{vec: v}, labels)
	return v
}

func (f *factory) plainCounter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mosnlite", Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f *factory) plainGauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "mosnlite", Name: name, Help: help})
	f.r.MustRegister(g)
	return g
}

func (f *factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mosnlite", Name: name, Help: help}, labels)
	f.r.MustRegister(v)
	f.scope(scopedVec{vec: v}, labels)
	return v
}
