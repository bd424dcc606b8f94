// Package config holds mosnlite's configuration: MOSN's v2 JSON format, decoded with
// json-iterator, defaulted and validated. Validation reports every problem with the JSON
// path of the offending field; it never mutates. Other packages read these types but never
// decode JSON themselves: extension configs stay RawMessage until their factory decodes them
// with Unmarshal from this package.
package config

import "time"

// Config is the whole file: MOSN's v2 top level.
type Config struct {
	Servers          []Server       `json:"servers,omitempty"`
	ClusterManager   ClusterManager `json:"cluster_manager"`
	Admin            *Admin         `json:"admin,omitempty"`
	Extends          []TypedConfig  `json:"extends,omitempty"`
	DynamicResources RawMessage     `json:"dynamic_resources,omitempty"`
	StaticResources  RawMessage     `json:"static_resources,omitempty"`
	Metrics          *Metrics       `json:"metrics,omitempty"`
	Tracing          *Tracing       `json:"tracing,omitempty"`
	Pprof            RawMessage     `json:"pprof,omitempty"`
	// DisableUpgrade is MOSN's hot-upgrade switch; mosnlite has no hot upgrade, so it is
	// accepted and has no effect.
	DisableUpgrade bool `json:"disable_upgrade,omitempty"`
	// Drain governs graceful shutdown (mosnlite extension).
	Drain Drain `json:"drain"`
}

// Drain: on SIGTERM, keep accepting for Delay (readiness false), then stop accepting and let
// open sessions finish up to Timeout, then close what is left.
type Drain struct {
	Delay   Duration `json:"delay,omitempty"`   // default 0 for a file config started by hand
	Timeout Duration `json:"timeout,omitempty"` // default 30s
}

// Server is one entry of "servers" (mosnlite runs servers[0]; more is a validation error).
type Server struct {
	ServerName      string      `json:"server_name,omitempty"`
	DefaultLogPath  string      `json:"default_log_path,omitempty"`
	DefaultLogLevel string      `json:"default_log_level,omitempty"`
	GlobalLogRoller string      `json:"global_log_roller,omitempty"`
	GracefulTimeout Duration    `json:"graceful_timeout,omitempty"`
	Processor       int         `json:"processor,omitempty"`
	Listeners       []Listener  `json:"listeners,omitempty"`
	Routers         []RouterCfg `json:"routers,omitempty"`
}

// Listener is MOSN's listener config.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Network is "tcp" (default), "udp" or "unix".
	Network string `json:"network,omitempty"`
	// BindPort false makes a virtual listener: it owns Address for original_dst hand-off
	// but opens no socket. Default true.
	BindPort *bool `json:"bind_port,omitempty"`
	// UseOriginalDst: "" (off), "redirect" (iptables REDIRECT, SO_ORIGINAL_DST) or "tproxy".
	// MOSN's older boolean true means "redirect".
	UseOriginalDst  OriginalDst   `json:"use_original_dst,omitempty"`
	ListenerFilters []TypedConfig `json:"listener_filters,omitempty"`
	FilterChains    []FilterChain `json:"filter_chains,omitempty"`
	StreamFilters   []TypedConfig `json:"stream_filters,omitempty"`
	Inspector       bool          `json:"inspector,omitempty"`
	// ReusePort opens the socket with SO_REUSEPORT.
	ReusePort bool `json:"reuse_port,omitempty"`
	// MaxConnections caps open downstream connections on this listener (0: default 65536).
	MaxConnections int `json:"max_connections,omitempty"`
	// ConnectionIdleTimeout closes a downstream connection with no traffic (default 1h; "0s" off).
	ConnectionIdleTimeout *Duration `json:"connection_idle_timeout,omitempty"`
	// SendTimeout closes a downstream TCP connection whose peer accepts none of the bytes
	// sent to it for this long: a client that stopped reading (zero window), or one that
	// vanished with data unacknowledged. The kernel keeps the clock (TCP_USER_TIMEOUT, set
	// on the listening socket and inherited by every accepted one), so it costs nothing
	// per connection and idle connections with nothing to send are never affected.
	// Default 5m; "0s" off. At least 1ms; tcp listeners only.
	SendTimeout *Duration `json:"send_timeout,omitempty"`
	// PerConnBufferLimitBytes bounds what one connection may queue for writing and the
	// unread bytes it may hold. Unset (0): 1 MiB, except that RPC listeners raise the read
	// side to their codec's frame limit (bolt 16 MiB, dubbo 8 MiB); set, it bounds frames too.
	// HTTP/1: a request head still incomplete when a read leaves more than this unparsed
	// is answered 431 (bodies stream and are not held whole).
	PerConnBufferLimitBytes uint32      `json:"per_connection_buffer_limit_bytes,omitempty"`
	AccessLogs              []AccessLog `json:"access_logs,omitempty"`
	LogPath                 string      `json:"log_path,omitempty"`
	LogLevel                string      `json:"log_level,omitempty"`
}

// BindsPort reports whether the listener opens a socket (bind_port defaults to true).
func (l *Listener) BindsPort() bool { return l.BindPort == nil || *l.BindPort }

// OriginalDst is the use_original_dst mode; it decodes from a string or MOSN's old boolean.
type OriginalDst string

// Original-destination modes.
const (
	OriginalDstOff      OriginalDst = ""
	OriginalDstRedirect OriginalDst = "redirect"
	OriginalDstTProxy   OriginalDst = "tproxy"
)

// FilterChain holds the network filters run on each accepted connection, in order.
type FilterChain struct {
	FilterChainMatch RawMessage    `json:"filter_chain_match,omitempty"`
	TLSContext       *TLSConfig    `json:"tls_context,omitempty"`
	TLSContexts      []TLSConfig   `json:"tls_context_set,omitempty"`
	Filters          []TypedConfig `json:"filters,omitempty"`
}

// TLSConfig is MOSN's tls_context. An empty object (as MOSN's examples write) means no TLS.
type TLSConfig struct {
	Status       bool     `json:"status,omitempty"`
	Type         string   `json:"type,omitempty"`
	ServerName   string   `json:"server_name,omitempty"`
	CACert       string   `json:"ca_cert,omitempty"`
	CertChain    string   `json:"cert_chain,omitempty"`
	PrivateKey   string   `json:"private_key,omitempty"`
	VerifyClient bool     `json:"verify_client,omitempty"`
	InsecureSkip bool     `json:"insecure_skip,omitempty"`
	ALPN         string   `json:"alpn,omitempty"`
	CipherSuites string   `json:"cipher_suites,omitempty"`
	MinVersion   string   `json:"min_version,omitempty"`
	MaxVersion   string   `json:"max_version,omitempty"`
	Fallback     bool     `json:"fall_back,omitempty"`
	EcdhCurves   string   `json:"ecdh_curves,omitempty"`
	SDSSource    *RawJSON `json:"sds_source,omitempty"`
}

// RawJSON is an opaque JSON value kept as bytes.
type RawJSON = RawMessage

// AccessLog is one access-log sink.
type AccessLog struct {
	Path   string `json:"log_path,omitempty"`
	Format string `json:"log_format,omitempty"`
}

// TypedConfig is the polymorphic {"type": ..., "config": {...}} used for filters, listener
// filters, extends and metric sinks. Each factory decodes Config into its own struct.
type TypedConfig struct {
	Type   string     `json:"type"`
	Config RawMessage `json:"config,omitempty"`
}

// ProxyConfig is the "proxy" network filter's config (pkg/filter/network/proxy decodes it
// again with its extend_config); its fields are typed here so validation can check
// protocols and router names.
type ProxyConfig struct {
	Name               string         `json:"name,omitempty"`
	DownstreamProtocol string         `json:"downstream_protocol"`
	UpstreamProtocol   string         `json:"upstream_protocol,omitempty"`
	RouterConfigName   string         `json:"router_config_name"`
	ExtendConfig       map[string]any `json:"extend_config,omitempty"`
}

// TCPProxyConfig is the "tcp_proxy" network filter's config (MOSN field names).
type TCPProxyConfig struct {
	StatPrefix string `json:"stat_prefix,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	// IdleTimeout accepts "15s" or MOSN's integer nanoseconds. Default 1h; "0s" off.
	IdleTimeout        *Duration     `json:"idle_timeout,omitempty"`
	MaxConnectAttempts uint32        `json:"max_connect_attempts,omitempty"`
	Routes             []TCPRouteCfg `json:"routes,omitempty"`
}

// TCPRouteCfg picks a cluster by source/destination CIDR and port (MOSN's tcp_proxy routes).
type TCPRouteCfg struct {
	Cluster          string    `json:"cluster"`
	SourceAddrs      []CIDRCfg `json:"source_addrs,omitempty"`
	DestinationAddrs []CIDRCfg `json:"destination_addrs,omitempty"`
	SourcePort       string    `json:"source_port,omitempty"`
	DestinationPort  string    `json:"destination_port,omitempty"`
}

// CIDRCfg is an address with a prefix length.
type CIDRCfg struct {
	Address string `json:"address"`
	Length  uint32 `json:"length"`
}

// UDPProxyConfig is the "udp_proxy" network filter's config.
type UDPProxyConfig struct {
	StatPrefix string `json:"stat_prefix,omitempty"`
	Cluster    string `json:"cluster"`
	// IdleTimeout ends a client's session after no datagram either way (default 60s).
	IdleTimeout *Duration `json:"idle_timeout,omitempty"`
	// MaxSessions caps concurrent client sessions on the listener (default 10000).
	MaxSessions int `json:"max_sessions,omitempty"`
}

// OriginalDstFilterConfig is the "original_dst" listener filter's config.
type OriginalDstFilterConfig struct {
	Type string `json:"type,omitempty"` // "redirect" or "tproxy"
}

// RouterCfg is MOSN's router configuration (router_config_name + virtual hosts).
type RouterCfg struct {
	RouterConfigName        string              `json:"router_config_name"`
	VirtualHosts            []VirtualHost       `json:"virtual_hosts,omitempty"`
	RequestHeadersToAdd     []HeaderValueOption `json:"request_headers_to_add,omitempty"`
	ResponseHeadersToAdd    []HeaderValueOption `json:"response_headers_to_add,omitempty"`
	RequestHeadersToRemove  []string            `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToRemove []string            `json:"response_headers_to_remove,omitempty"`
}

// VirtualHost is a set of domains and their routes.
type VirtualHost struct {
	Name                    string              `json:"name"`
	Domains                 []string            `json:"domains"`
	Routers                 []Route             `json:"routers,omitempty"`
	RequestHeadersToAdd     []HeaderValueOption `json:"request_headers_to_add,omitempty"`
	ResponseHeadersToAdd    []HeaderValueOption `json:"response_headers_to_add,omitempty"`
	RequestHeadersToRemove  []string            `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToRemove []string            `json:"response_headers_to_remove,omitempty"`
}

// Route is one entry of a virtual host's "routers".
type Route struct {
	Match                   RouteMatch            `json:"match"`
	Route                   *RouteAction          `json:"route,omitempty"`
	DirectResponse          *DirectResponse       `json:"direct_response,omitempty"`
	Redirect                *RedirectAction       `json:"redirect,omitempty"`
	RequestMirrorPolicies   *MirrorPolicy         `json:"request_mirror_policies,omitempty"`
	RequestHeadersToAdd     []HeaderValueOption   `json:"request_headers_to_add,omitempty"`
	ResponseHeadersToAdd    []HeaderValueOption   `json:"response_headers_to_add,omitempty"`
	RequestHeadersToRemove  []string              `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToRemove []string              `json:"response_headers_to_remove,omitempty"`
	PerFilterConfig         map[string]RawMessage `json:"per_filter_config,omitempty"`
}

// RouteMatch selects requests.
type RouteMatch struct {
	Prefix    string          `json:"prefix,omitempty"`
	Path      string          `json:"path,omitempty"`
	Regex     string          `json:"regex,omitempty"`
	Headers   []HeaderMatcher `json:"headers,omitempty"`
	Variables []VarMatcher    `json:"variables,omitempty"`
}

// HeaderMatcher matches a header by exact value, or by regex when Regex is true.
// MOSN's examples write {"name":"service","value":".*"} meaning a regex.
type HeaderMatcher struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Regex *bool  `json:"regex,omitempty"`
}

// VarMatcher matches a request variable.
type VarMatcher struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	Regex string `json:"regex,omitempty"`
}

// RouteAction forwards to a cluster. MaxGrpcTimeout, when set, times a gRPC request
// (content-type application/grpc...) by its grpc-timeout header instead of Timeout,
// capped at this value ("0s": no cap); GrpcTimeoutOffset is taken off the header's value
// first. Envoy's semantics.
type RouteAction struct {
	ClusterName             string              `json:"cluster_name,omitempty"`
	ClusterHeader           string              `json:"cluster_header,omitempty"`
	WeightedClusters        []WeightedCluster   `json:"weighted_clusters,omitempty"`
	UpstreamProtocol        string              `json:"upstream_protocol,omitempty"`
	PrefixRewrite           string              `json:"prefix_rewrite,omitempty"`
	RegexRewrite            *RegexRewrite       `json:"regex_rewrite,omitempty"`
	HostRewrite             string              `json:"host_rewrite,omitempty"`
	AutoHostRewrite         bool                `json:"auto_host_rewrite,omitempty"`
	Timeout                 *Duration           `json:"timeout,omitempty"`
	MaxGrpcTimeout          *Duration           `json:"max_grpc_timeout,omitempty"`
	GrpcTimeoutOffset       *Duration           `json:"grpc_timeout_offset,omitempty"`
	RetryPolicy             *RetryPolicy        `json:"retry_policy,omitempty"`
	HashPolicy              []HashPolicy        `json:"hash_policy,omitempty"`
	MetadataMatch           RawMessage          `json:"metadata_match,omitempty"`
	RequestHeadersToAdd     []HeaderValueOption `json:"request_headers_to_add,omitempty"`
	ResponseHeadersToAdd    []HeaderValueOption `json:"response_headers_to_add,omitempty"`
	RequestHeadersToRemove  []string            `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToRemove []string            `json:"response_headers_to_remove,omitempty"`
}

// WeightedCluster is one arm of weighted_clusters.
type WeightedCluster struct {
	Cluster struct {
		Name   string `json:"name"`
		Weight uint32 `json:"weight"`
	} `json:"cluster"`
}

// RegexRewrite rewrites the path with a regex.
type RegexRewrite struct {
	Pattern struct {
		Regex string `json:"regex"`
	} `json:"pattern"`
	Substitution string `json:"substitution"`
}

// RetryPolicy is a route's retry policy.
type RetryPolicy struct {
	RetryOn              bool      `json:"retry_on,omitempty"`
	RetryTimeout         *Duration `json:"retry_timeout,omitempty"`
	NumRetries           uint32    `json:"num_retries,omitempty"`
	RetriableStatusCodes []uint32  `json:"retriable_status_codes,omitempty"`
}

// HashPolicy picks the consistent-hash key for LB_MAGLEV.
type HashPolicy struct {
	Header *struct {
		Key string `json:"key"`
	} `json:"header,omitempty"`
	Cookie *struct {
		Name string `json:"name"`
	} `json:"cookie,omitempty"`
	SourceIP  *struct{} `json:"source_ip,omitempty"`
	HTTPParam *struct {
		Name string `json:"name"`
	} `json:"http_query_parameter,omitempty"`
}

// DirectResponse answers locally.
type DirectResponse struct {
	StatusCode int    `json:"status"`
	Body       string `json:"body,omitempty"`
}

// RedirectAction answers with a redirect.
type RedirectAction struct {
	ResponseCode   int    `json:"response_code,omitempty"`
	PathRedirect   string `json:"path_redirect,omitempty"`
	HostRedirect   string `json:"host_redirect,omitempty"`
	SchemeRedirect string `json:"scheme_redirect,omitempty"`
}

// MirrorPolicy copies a share of requests to another cluster.
type MirrorPolicy struct {
	Cluster string `json:"cluster"`
	Percent uint32 `json:"percent"`
}

// HeaderValueOption adds a header.
type HeaderValueOption struct {
	Header *struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"header"`
	Append *bool `json:"append,omitempty"`
}

// ClusterManager lists clusters.
type ClusterManager struct {
	TLSContext RawMessage `json:"tls_context,omitempty"`
	Clusters   []Cluster  `json:"clusters,omitempty"`
	// ClusterConfigPath is MOSN's directory of per-cluster files; not supported.
	ClusterConfigPath string `json:"clusters_configs,omitempty"`
}

// Cluster is one upstream cluster.
type Cluster struct {
	Name string `json:"name"`
	// Type: SIMPLE (default), STRICT_DNS, EDS, ORIGINAL_DST.
	Type   string `json:"type,omitempty"`
	LBType string `json:"lb_type,omitempty"` // default LB_ROUNDROBIN
	Hosts  []Host `json:"hosts,omitempty"`
	// ConnectTimeout bounds one dial (default 5s).
	ConnectTimeout *Duration `json:"connect_timeout,omitempty"`
	// MaxConnectAttempts: dials tried over distinct hosts before giving up (default 3).
	MaxConnectAttempts uint32 `json:"max_connect_attempts,omitempty"`
	// PickTimeout bounds how long a pick waits for a host to come up when none is
	// (default 1s; "0s": fail at once). A request's own deadline caps it further.
	PickTimeout          *Duration `json:"pick_timeout,omitempty"`
	MaxRequestPerConn    uint32    `json:"max_request_per_conn,omitempty"`
	ConnBufferLimitBytes uint32    `json:"conn_buffer_limit_bytes,omitempty"`
	IdleTimeout          *Duration `json:"idle_timeout,omitempty"`
	// CircuitBreakers: the DEFAULT priority's thresholds apply (defaults 1024 connections,
	// 1024 pending, 1024 requests, 3 retries for absent fields; 0 is a limit).
	CircuitBreakers []CircuitBreaker `json:"circuit_breakers,omitempty"`
	// RetryBudget bounds the rate of retries to the cluster (Linkerd's retry budget); absent:
	// the default budget (20 % of requests plus 10 per second over 10s) applies.
	RetryBudget *RetryBudget `json:"retry_budget,omitempty"`
	// HealthCheck enables active health checks of every host (MOSN's block).
	HealthCheck *HealthCheck `json:"health_check,omitempty"`
	// OutlierDetection enables passive outlier detection (Envoy's fields); absent: off.
	OutlierDetection *OutlierDetection `json:"outlier_detection,omitempty"`
	LBConfig         *LBConfig         `json:"lbconfig,omitempty"`
	LBSubsetConfig   RawMessage        `json:"lb_subset_config,omitempty"`
	Spec             RawMessage        `json:"spec,omitempty"`
	TLSContext       *TLSConfig        `json:"tls_context,omitempty"`
	// DNS (STRICT_DNS): refresh period (default 5s); on a failed lookup the last good hosts
	// stay and the next try backs off.
	DNSRefreshRate  *Duration `json:"dns_refresh_rate,omitempty"`
	RespectDNSTTL   bool      `json:"respect_dns_ttl,omitempty"`
	DNSLookupFamily string    `json:"dns_lookup_family,omitempty"` // V4_ONLY, V6_ONLY, AUTO (default)
	ConnPoolSize    uint32    `json:"conn_pool_size,omitempty"`
}

// LBConfig tunes balancers.
type LBConfig struct {
	ChoiceCount       uint32    `json:"choice_count,omitempty"`        // LB_LEAST_REQUEST / P2C: default 2
	ActiveRequestBias float64   `json:"active_request_bias,omitempty"` // least request weighting
	MaglevTableSize   uint64    `json:"maglev_table_size,omitempty"`   // prime; default 65537
	EWMADecay         *Duration `json:"ewma_decay,omitempty"`          // peak EWMA decay; default 10s
	EWMADefaultRTT    *Duration `json:"ewma_default_rtt,omitempty"`    // before any sample; default 30ms
}

// CircuitBreaker limits (MOSN's thresholds, Envoy's semantics). An absent threshold takes
// its default; a present one is the limit as written, 0 included: max_retries 0 allows no
// retry, max_connections 0 no upstream connection, max_requests 0 no request, and
// max_pending_requests 0 no request waiting for a healthy host (pick_timeout), the one
// queue mosnlite has.
type CircuitBreaker struct {
	Priority           string  `json:"priority,omitempty"`
	MaxConnections     *uint32 `json:"max_connections,omitempty"`      // default 1024
	MaxPendingRequests *uint32 `json:"max_pending_requests,omitempty"` // default 1024
	MaxRequests        *uint32 `json:"max_requests,omitempty"`         // default 1024
	MaxRetries         *uint32 `json:"max_retries,omitempty"`          // default 3
}

// RetryBudget is a cluster's rate-based retry budget (Linkerd's retryBudget; mosnlite
// extension). Every request to the cluster deposits into it and every retry withdraws;
// over the last ttl a retry is allowed while the retries made stay below retry_ratio ×
// the requests made plus min_retries_per_second × ttl, so a failing upstream sees at
// most that many extra tries, whatever num_retries says. It applies on top of the
// max_retries circuit breaker, which bounds retries in flight: a retry needs both.
// Absent, the defaults apply; {"disabled": true} turns it off (then only max_retries
// bounds retries) and allows no other field.
type RetryBudget struct {
	Disabled bool `json:"disabled,omitempty"`
	// RetryRatio: retries allowed per request, 0 to 1 (default 0.2); 0 leaves only the
	// min_retries_per_second reserve.
	RetryRatio *float64 `json:"retry_ratio,omitempty"`
	// MinRetriesPerSecond: retries allowed whatever the traffic (default 10), so a cluster
	// with little traffic can still retry; 0 leaves only the ratio.
	MinRetriesPerSecond *uint32 `json:"min_retries_per_second,omitempty"`
	// TTL is the window over which requests and retries are counted, 1s to 60s (default 10s).
	TTL *Duration `json:"ttl,omitempty"`
}

// HealthCheck is MOSN's cluster health_check block. Every host is probed every interval
// (plus a random jitter up to interval_jitter); unhealthy_threshold consecutive failures take
// a host down, healthy_threshold consecutive successes bring it back. Hosts start healthy
// (as in MOSN), but a host that has not yet passed a check goes down on its first failure.
type HealthCheck struct {
	// Protocol: "tcp" (default: connect, optionally send and expect bytes) or "http" (an
	// HTTP/1.1 request; MOSN's "Http1" means the same). Matched case-insensitively.
	Protocol string `json:"protocol,omitempty"`
	// Timeout bounds one check (default 1s).
	Timeout *Duration `json:"timeout,omitempty"`
	// Interval between the end of a check and the next (default 15s, MOSN's).
	Interval *Duration `json:"interval,omitempty"`
	// IntervalJitter adds a uniform random delay in [0, jitter) to each wait, so hosts are
	// not checked in lock step (default: a tenth of interval; "0s" for none).
	IntervalJitter *Duration `json:"interval_jitter,omitempty"`
	// InitialDelay delays each host's first check (MOSN's initial_delay_seconds, a
	// duration despite its name; default 0, plus the jitter).
	InitialDelay *Duration `json:"initial_delay_seconds,omitempty"`
	// HealthyThreshold: consecutive successes that bring a down host up (default 2).
	HealthyThreshold uint32 `json:"healthy_threshold,omitempty"`
	// UnhealthyThreshold: consecutive failures that take an up host down (default 3).
	UnhealthyThreshold uint32 `json:"unhealthy_threshold,omitempty"`
	// ServiceName is MOSN's stats name for the checker; accepted, unused.
	ServiceName string             `json:"service_name,omitempty"`
	CheckConfig *HealthCheckConfig `json:"check_config,omitempty"`
	// CommonCallbacks and EventLogPath are MOSN extension hooks; accepted with a warning.
	CommonCallbacks []string `json:"common_callbacks,omitempty"`
	EventLogPath    string   `json:"event_log_path,omitempty"`
}

// HealthCheckConfig is health_check.check_config: per-protocol settings.
type HealthCheckConfig struct {
	HTTP *HTTPCheckConfig `json:"http_check_config,omitempty"` // MOSN's key
	TCP  *TCPCheckConfig  `json:"tcp_check_config,omitempty"`  // mosnlite: Envoy's tcp_health_check
}

// HTTPCheckConfig is MOSN's http_check_config: the request an HTTP check sends over a fresh
// connection (Connection: close) and the statuses that pass.
type HTTPCheckConfig struct {
	// Port, when set, is checked instead of the host's own port (same IP).
	Port uint32 `json:"port,omitempty"`
	// Timeout, when set, replaces health_check.timeout for HTTP checks.
	Timeout *Duration `json:"timeout,omitempty"`
	// Path with an optional query (default "/").
	Path   string `json:"path,omitempty"`
	Method string `json:"method,omitempty"` // default GET
	Scheme string `json:"scheme,omitempty"` // "http" (default); https is not supported
	// Domain is the Host header (default: the host's address).
	Domain string `json:"domain,omitempty"`
	// Codes lists the passing statuses as inclusive ranges (MOSN writes {"Start":200,"End":299});
	// default: 200 only.
	Codes []StatusRange `json:"codes,omitempty"`
}

// StatusRange is an inclusive range of HTTP statuses.
type StatusRange struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// TCPCheckConfig makes a TCP check exchange bytes after connecting: Send is written, then
// the reply must contain Receive before the timeout. Both are hex strings, as Envoy's
// tcp_health_check payloads; either may be empty (Receive alone suits banner protocols).
type TCPCheckConfig struct {
	Send    string `json:"send,omitempty"`
	Receive string `json:"receive,omitempty"`
}

// OutlierDetection is passive outlier detection with Envoy's field names. Connect failures
// (and results the proxies report) count per host; Consecutive5xx failures in a row eject
// the host for base_ejection_time × its ejection count (capped by max_ejection_time). The
// count decays by one for every interval the host spends un-ejected. At most
// max_ejection_percent of the hosts are ejected at once, but one host may always be when
// none is (Envoy's rule), except that the last host up is never ejected (mosnlite has no
// panic routing).
type OutlierDetection struct {
	// Consecutive5xx: failures in a row that eject a host (default 5).
	Consecutive5xx uint32 `json:"consecutive_5xx,omitempty"`
	// ConsecutiveErrors is the older name of Consecutive5xx (Istio's); set one.
	ConsecutiveErrors  uint32    `json:"consecutive_errors,omitempty"`
	Interval           *Duration `json:"interval,omitempty"`             // default 10s
	BaseEjectionTime   *Duration `json:"base_ejection_time,omitempty"`   // default 30s
	MaxEjectionTime    *Duration `json:"max_ejection_time,omitempty"`    // default 300s (at least base)
	MaxEjectionPercent *uint32   `json:"max_ejection_percent,omitempty"` // default 10
}

// Host is one upstream endpoint.
type Host struct {
	Address    string            `json:"address"`
	Hostname   string            `json:"hostname,omitempty"`
	Weight     uint32            `json:"weight,omitempty"` // default 1 (0 means 1)
	MetaData   map[string]string `json:"metadata,omitempty"`
	TLSDisable bool              `json:"tls_disable,omitempty"`
}

// Admin is MOSN's admin address block.
type Admin struct {
	Address struct {
		SocketAddress struct {
			Address   string `json:"address"`
			PortValue uint32 `json:"port_value"`
		} `json:"socket_address"`
	} `json:"address"`
}

// Metrics is MOSN's metrics block.
type Metrics struct {
	ShmZone      string        `json:"shm_zone,omitempty"`
	ShmSize      string        `json:"shm_size,omitempty"`
	FlushMosn    bool          `json:"flush_mosn,omitempty"`
	LazyFlush    bool          `json:"lazy_flush,omitempty"`
	Sinks        []TypedConfig `json:"sinks,omitempty"`
	StatsMatcher RawMessage    `json:"stats_matcher,omitempty"`
}

// Tracing is MOSN's tracing block; accepted, not acted on.
type Tracing struct {
	Enable bool       `json:"enable,omitempty"`
	Driver string     `json:"driver,omitempty"`
	Config RawMessage `json:"config,omitempty"`
}

// Duration is a time.Duration that decodes from "1.5s" or from integer nanoseconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Or returns *d, or def when d is nil.
func (d *Duration) Or(def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return time.Duration(*d)
}
