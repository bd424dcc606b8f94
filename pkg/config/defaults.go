package config

import "time"

// Defaults (the project's design notes, "Defaults and limits"; docs/config.md lists them
// by field). ApplyDefaults writes the ones that live in
// typed fields; the others are for the packages that decode their own config (filters,
// router, balancers) to use when a field is absent.
const (
	DefaultNetwork                 = NetworkTCP
	DefaultClusterType             = ClusterSimple
	DefaultLBType                  = LBRoundRobin
	DefaultHostWeight              = 1
	DefaultConnectTimeout          = 5 * time.Second
	DefaultMaxConnectAttempts      = 3
	DefaultPickTimeout             = time.Second
	DefaultDNSRefreshRate          = 5 * time.Second
	DefaultDrainTimeout            = 30 * time.Second
	DefaultMaxConnections          = 65536
	DefaultPerConnBufferLimitBytes = 1 << 20
	DefaultConnectionIdleTimeout   = time.Hour
	DefaultSendTimeout             = 5 * time.Minute
	// MaxSendTimeout is the largest send_timeout the kernel takes (TCP_USER_TIMEOUT is a
	// signed 32-bit count of milliseconds).
	MaxSendTimeout = (1<<31 - 1) * time.Millisecond

	// Not written by ApplyDefaults: read by the packages that own these settings.
	DefaultRouteTimeout          = 15 * time.Second
	DefaultRequestHeaderTimeout  = 10 * time.Second
	DefaultTCPProxyIdleTimeout   = time.Hour
	DefaultUDPProxyIdleTimeout   = 60 * time.Second
	DefaultUDPProxyMaxSessions   = 10000
	DefaultChoiceCount           = 2
	DefaultMaglevTableSize       = 65537
	MaxMaglevTableSize           = 5000011 // a prime; larger tables cost memory for no balance gain
	DefaultEWMADecay             = 10 * time.Second
	DefaultEWMADefaultRTT        = 30 * time.Millisecond
	DefaultCircuitMaxConnections = 1024
	DefaultCircuitMaxPending     = 1024
	DefaultCircuitMaxRequests    = 1024
	DefaultCircuitMaxRetries     = 3

	// Retry budget (retry_budget), Linkerd's defaults; the ttl is bounded.
	DefaultRetryBudgetRatio        = 0.2
	DefaultRetryBudgetMinPerSecond = 10
	DefaultRetryBudgetTTL          = 10 * time.Second
	MinRetryBudgetTTL              = time.Second
	MaxRetryBudgetTTL              = time.Minute

	// Active health checks (health_check): MOSN's timeout and interval; thresholds of 2 up
	// and 3 down (MOSN's 1 and 1 let a single lost SYN take a host out).
	DefaultHealthCheckTimeout  = time.Second
	DefaultHealthCheckInterval = 15 * time.Second
	DefaultHealthyThreshold    = 2
	DefaultUnhealthyThreshold  = 3
	DefaultHealthCheckPath     = "/"
	DefaultHealthCheckStatus   = 200

	// Outlier detection (outlier_detection), Envoy's defaults.
	DefaultOutlierConsecutive5xx     = 5
	DefaultOutlierInterval           = 10 * time.Second
	DefaultOutlierBaseEjectionTime   = 30 * time.Second
	DefaultOutlierMaxEjectionTime    = 300 * time.Second
	DefaultOutlierMaxEjectionPercent = 10
)

// ApplyDefaults fills unset fields with their defaults: listener network, max_connections,
// per_connection_buffer_limit_bytes and connection_idle_timeout; cluster type, lb_type
// (LB_ORIGINAL_DST for ORIGINAL_DST clusters), connect_timeout, max_connect_attempts,
// pick_timeout, dns_refresh_rate (STRICT_DNS) and host weights (0 counts as unset); and
// drain.timeout. It never changes a value that is set, so applying it twice is harmless.
func (c *Config) ApplyDefaults() {
	if c.Drain.Timeout == 0 {
		c.Drain.Timeout = Duration(DefaultDrainTimeout)
	}
	for i := range c.Servers {
		for j := range c.Servers[i].Listeners {
			l := &c.Servers[i].Listeners[j]
			if l.Network == "" {
				l.Network = DefaultNetwork
			}
			if l.MaxConnections == 0 {
				l.MaxConnections = DefaultMaxConnections
			}
			// PerConnBufferLimitBytes stays 0 when unset: the connection then uses
			// DefaultPerConnBufferLimitBytes, and a protocol with larger frames (RPC) may
			// raise its read limit, which an explicit setting forbids.
			if l.ConnectionIdleTimeout == nil {
				l.ConnectionIdleTimeout = durationPtr(DefaultConnectionIdleTimeout)
			}
			if l.SendTimeout == nil {
				l.SendTimeout = durationPtr(DefaultSendTimeout)
			}
		}
	}
	for i := range c.ClusterManager.Clusters {
		cl := &c.ClusterManager.Clusters[i]
		if cl.Type == "" {
			cl.Type = DefaultClusterType
		}
		if cl.LBType == "" {
			cl.LBType = DefaultLBType
			if cl.Type == ClusterOriginalDst {
				cl.LBType = LBOriginalDst
			}
		}
		if cl.ConnectTimeout == nil {
			cl.ConnectTimeout = durationPtr(DefaultConnectTimeout)
		}
		if cl.MaxConnectAttempts == 0 {
			cl.MaxConnectAttempts = DefaultMaxConnectAttempts
		}
		if cl.PickTimeout == nil {
			cl.PickTimeout = durationPtr(DefaultPickTimeout)
		}
		if cl.DNSRefreshRate == nil && cl.Type == ClusterStrictDNS {
			cl.DNSRefreshRate = durationPtr(DefaultDNSRefreshRate)
		}
		for j := range cl.Hosts {
			if cl.Hosts[j].Weight == 0 {
				cl.Hosts[j].Weight = DefaultHostWeight
			}
		}
	}
}

func durationPtr(d time.Duration) *Duration {
	v := Duration(d)
	return &v
}
