package xds

//lint:file-ignore SA1019 control planes still send Envoy's deprecated fields; they are read deliberately.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// ConvertedCluster is a CDS cluster in mosnlite's form. For an EDS cluster, ServiceName is the
// ClusterLoadAssignment name to subscribe to (eds_cluster_config.service_name, else the
// cluster's own name) and Cluster.Hosts is empty.
type ConvertedCluster struct {
	Cluster     config.Cluster
	ServiceName string
}

// ConvertCluster turns a CDS resource into a cluster config.
//
// Type: STATIC → SIMPLE, STRICT_DNS and LOGICAL_DNS → STRICT_DNS (every resolved address is a
// host), EDS → EDS, ORIGINAL_DST → ORIGINAL_DST. lb_policy: ROUND_ROBIN →
// LB_WEIGHTED_ROUNDROBIN (Envoy's round robin honours endpoint weights; with equal weights it is
// plain round robin), LEAST_REQUEST → LB_LEAST_REQUEST, RANDOM → LB_RANDOM, RING_HASH and MAGLEV
// → LB_MAGLEV (both consistent hashing; the ring is replaced by a Maglev table),
// CLUSTER_PROVIDED → LB_ORIGINAL_DST for ORIGINAL_DST clusters.
func ConvertCluster(c *clusterv3.Cluster) (ConvertedCluster, error) {
	var out ConvertedCluster
	cc := &out.Cluster
	cc.Name = c.GetName()
	if cc.Name == "" {
		return out, errors.New("cluster without a name")
	}
	fail := func(format string, a ...any) (ConvertedCluster, error) {
		return out, fmt.Errorf("cluster %q: %s", c.GetName(), fmt.Sprintf(format, a...))
	}
	switch t := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		switch t.Type {
		case clusterv3.Cluster_STATIC:
			cc.Type = config.ClusterSimple
		case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			cc.Type = config.ClusterStrictDNS
		case clusterv3.Cluster_EDS:
			cc.Type = config.ClusterEDS
		case clusterv3.Cluster_ORIGINAL_DST:
			cc.Type = config.ClusterOriginalDst
		default:
			return fail("type %v is not supported", t.Type)
		}
	case nil:
		cc.Type = config.ClusterSimple // Envoy's default: STATIC
	default:
		return fail("cluster_type (custom cluster extensions) is not supported")
	}
	if cc.Type == config.ClusterEDS {
		out.ServiceName = cc.Name
		if ec := c.GetEdsClusterConfig(); ec != nil {
			if ec.GetServiceName() != "" {
				out.ServiceName = ec.GetServiceName()
			}
			if err := checkADSSource(ec.GetEdsConfig()); err != nil {
				return fail("eds_cluster_config.eds_config: %v", err)
			}
		}
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		cc.LBType = config.LBWeightedRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		cc.LBType = config.LBLeastRequest
		if lr := c.GetLeastRequestLbConfig(); lr != nil {
			cc.LBConfig = &config.LBConfig{ChoiceCount: lr.GetChoiceCount().GetValue()}
			if b := lr.GetActiveRequestBias(); b != nil {
				cc.LBConfig.ActiveRequestBias = b.GetDefaultValue()
			}
		}
	case clusterv3.Cluster_RANDOM:
		cc.LBType = config.LBRandom
	case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
		cc.LBType = config.LBMaglev
		if mc := c.GetMaglevLbConfig(); mc != nil && mc.GetTableSize() != nil {
			cc.LBConfig = &config.LBConfig{MaglevTableSize: mc.GetTableSize().GetValue()}
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if cc.Type != config.ClusterOriginalDst {
			return fail("lb_policy CLUSTER_PROVIDED is only supported with type ORIGINAL_DST")
		}
		cc.LBType = config.LBOriginalDst
	default:
		return fail("lb_policy %v is not supported", c.GetLbPolicy())
	}
	if cc.Type == config.ClusterOriginalDst {
		cc.LBType = config.LBOriginalDst
	}
	switch {
	case c.GetLoadBalancingPolicy() != nil:
		return fail("load_balancing_policy is not supported (use lb_policy)")
	case c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) > 0:
		return fail("transport_socket (upstream TLS) is not supported")
	case c.GetLbSubsetConfig() != nil && len(c.GetLbSubsetConfig().GetSubsetSelectors()) > 0:
		return fail("lb_subset_config is not supported")
	case len(c.GetFilters()) > 0:
		return fail("filters (upstream network filters) are not supported")
	case c.GetUpstreamBindConfig() != nil:
		return fail("upstream_bind_config is not supported")
	}
	cc.ConnectTimeout = duration(c.GetConnectTimeout())
	if v := c.GetPerConnectionBufferLimitBytes(); v != nil {
		cc.ConnBufferLimitBytes = v.GetValue()
	}
	if v := c.GetMaxRequestsPerConnection(); v != nil {
		cc.MaxRequestPerConn = v.GetValue()
	}
	if hp := c.GetCommonHttpProtocolOptions(); hp != nil {
		if v := hp.GetMaxRequestsPerConnection(); v != nil {
			cc.MaxRequestPerConn = v.GetValue()
		}
		cc.IdleTimeout = duration(hp.GetIdleTimeout())
	}
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetRetryBudget() != nil {
			return fail("circuit_breakers: retry_budget is not supported")
		}
		// The thresholds are wrapped: an absent one keeps its default, a 0 is a limit.
		cc.CircuitBreakers = append(cc.CircuitBreakers, config.CircuitBreaker{
			Priority:           t.GetPriority().String(),
			MaxConnections:     uint32Ptr(t.GetMaxConnections()),
			MaxPendingRequests: uint32Ptr(t.GetMaxPendingRequests()),
			MaxRequests:        uint32Ptr(t.GetMaxRequests()),
			MaxRetries:         uint32Ptr(t.GetMaxRetries()),
		})
	}
	if od := c.GetOutlierDetection(); od != nil {
		cc.OutlierDetection = &config.OutlierDetection{
			Consecutive5xx:   od.GetConsecutive_5Xx().GetValue(),
			Interval:         duration(od.GetInterval()),
			BaseEjectionTime: duration(od.GetBaseEjectionTime()),
			MaxEjectionTime:  duration(od.GetMaxEjectionTime()),
		}
		cc.OutlierDetection.MaxEjectionPercent = uint32Ptr(od.GetMaxEjectionPercent())
	}
	switch hcs := c.GetHealthChecks(); len(hcs) {
	case 0:
	case 1:
		hc, err := convertHealthCheck(hcs[0])
		if err != nil {
			return fail("health_checks[0]: %v", err)
		}
		cc.HealthCheck = hc
	default:
		return fail("health_checks: more than one is not supported")
	}
	switch cc.Type {
	case config.ClusterStrictDNS:
		cc.DNSRefreshRate = duration(c.GetDnsRefreshRate())
		cc.RespectDNSTTL = c.GetRespectDnsTtl()
		switch c.GetDnsLookupFamily() {
		case clusterv3.Cluster_V4_ONLY:
			cc.DNSLookupFamily = "V4_ONLY"
		case clusterv3.Cluster_V6_ONLY:
			cc.DNSLookupFamily = "V6_ONLY"
		default:
			cc.DNSLookupFamily = "AUTO"
		}
		fallthrough
	case config.ClusterSimple:
		hosts, err := ConvertLoadAssignment(c.GetLoadAssignment())
		if err != nil {
			return fail("load_assignment: %v", err)
		}
		cc.Hosts = hosts
	}
	return out, nil
}

// checkADSSource accepts an absent config source or {ads:{}}; mosnlite has one ADS stream.
func checkADSSource(cs *corev3.ConfigSource) error {
	if cs == nil {
		return nil
	}
	switch cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads, nil:
		return nil
	}
	return fmt.Errorf("%T: only ads is supported", cs.GetConfigSourceSpecifier())
}

func convertHealthCheck(h *corev3.HealthCheck) (*config.HealthCheck, error) {
	out := &config.HealthCheck{
		Timeout:        duration(h.GetTimeout()),
		Interval:       duration(h.GetInterval()),
		IntervalJitter: duration(h.GetIntervalJitter()),
		InitialDelay:   duration(h.GetInitialJitter()),
	}
	out.HealthyThreshold = h.GetHealthyThreshold().GetValue()
	out.UnhealthyThreshold = h.GetUnhealthyThreshold().GetValue()
	switch k := h.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		hh := k.HttpHealthCheck
		out.Protocol = "http"
		hc := &config.HTTPCheckConfig{Path: hh.GetPath(), Domain: hh.GetHost()}
		if m := hh.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
			hc.Method = m.String()
		}
		if p := h.GetAltPort(); p != nil {
			hc.Port = p.GetValue()
		}
		for _, r := range hh.GetExpectedStatuses() {
			// Envoy's ranges are half-open [start, end); mosnlite's are inclusive.
			hc.Codes = append(hc.Codes, config.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd()) - 1})
		}
		out.CheckConfig = &config.HealthCheckConfig{HTTP: hc}
	case *corev3.HealthCheck_TcpHealthCheck_:
		out.Protocol = "tcp"
		th := k.TcpHealthCheck
		send, err := payloadHex(th.GetSend())
		if err != nil {
			return nil, fmt.Errorf("tcp_health_check.send: %w", err)
		}
		var recv string
		for _, r := range th.GetReceive() {
			p, err := payloadHex(r)
			if err != nil {
				return nil, fmt.Errorf("tcp_health_check.receive: %w", err)
			}
			recv += p
		}
		if send != "" || recv != "" {
			out.CheckConfig = &config.HealthCheckConfig{TCP: &config.TCPCheckConfig{Send: send, Receive: recv}}
		}
		if h.GetAltPort() != nil {
			return nil, errors.New("alt_port with a tcp check is not supported")
		}
	default:
		return nil, fmt.Errorf("%T is not supported (http_health_check or tcp_health_check)", k)
	}
	return out, nil
}

func payloadHex(p *corev3.HealthCheck_Payload) (string, error) {
	switch v := p.GetPayload().(type) {
	case *corev3.HealthCheck_Payload_Text:
		if _, err := hex.DecodeString(v.Text); err != nil {
			return "", fmt.Errorf("text is not hex: %w", err)
		}
		return v.Text, nil
	case *corev3.HealthCheck_Payload_Binary:
		return hex.EncodeToString(v.Binary), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("%T is not supported", p.GetPayload())
}

// ConvertLoadAssignment turns a ClusterLoadAssignment into hosts.
//
// Health: endpoints whose health_status is UNHEALTHY, DRAINING or TIMEOUT are left out (no new
// requests go to them; connections already open to them finish), as Envoy does when it routes
// around such hosts; UNKNOWN, HEALTHY and DEGRADED endpoints are hosts. A host's weight is its
// load_balancing_weight (default 1). Localities at a priority other than 0 (failover tiers) and
// drop_overloads have no equivalent and are errors. Metadata under "envoy.lb" becomes the
// host's string metadata.
func ConvertLoadAssignment(la *endpointv3.ClusterLoadAssignment) ([]config.Host, error) {
	if la == nil {
		return nil, nil
	}
	if len(la.GetPolicy().GetDropOverloads()) > 0 {
		return nil, errors.New("policy.drop_overloads is not supported")
	}
	var hosts []config.Host
	seen := map[string]bool{}
	for i, le := range la.GetEndpoints() {
		if le.GetPriority() != 0 {
			return nil, fmt.Errorf("endpoints[%d]: priority %d (failover tiers) is not supported", i, le.GetPriority())
		}
		for j, lb := range le.GetLbEndpoints() {
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			ep := lb.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: no endpoint (named endpoints are not supported)", i, j)
			}
			addr, _, err := socketAddress(ep.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d].endpoint.address: %w", i, j, err)
			}
			if seen[addr] {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: address %s listed twice", i, j, addr)
			}
			seen[addr] = true
			h := config.Host{Address: addr, Hostname: ep.GetHostname(), Weight: 1}
			if w := lb.GetLoadBalancingWeight(); w != nil {
				if w.GetValue() == 0 {
					return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: load_balancing_weight 0", i, j)
				}
				h.Weight = w.GetValue()
			}
			if md := lb.GetMetadata().GetFilterMetadata()["envoy.lb"]; md != nil {
				for k, v := range md.GetFields() {
					if sv := v.GetStringValue(); sv != "" {
						if h.MetaData == nil {
							h.MetaData = map[string]string{}
						}
						h.MetaData[k] = sv
					}
				}
			}
			hosts = append(hosts, h)
		}
	}
	return hosts, nil
}

// socketAddress renders an Envoy address as host:port (network "tcp"/"udp") or a unix path.
func socketAddress(a *corev3.Address) (addr, network string, err error) {
	switch v := a.GetAddress().(type) {
	case *corev3.Address_SocketAddress:
		sa := v.SocketAddress
		if sa.GetResolverName() != "" {
			return "", "", errors.New("resolver_name is not supported")
		}
		if sa.GetNamedPort() != "" {
			return "", "", errors.New("named_port is not supported")
		}
		if sa.GetAddress() == "" {
			return "", "", errors.New("socket_address.address empty")
		}
		network = "tcp"
		if sa.GetProtocol() == corev3.SocketAddress_UDP {
			network = "udp"
		}
		return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), network, nil
	case *corev3.Address_Pipe:
		return v.Pipe.GetPath(), "unix", nil
	case nil:
		return "", "", errors.New("missing")
	}
	return "", "", fmt.Errorf("%T is not supported", a.GetAddress())
}

func duration(d *durationpb.Duration) *config.Duration {
	if d == nil {
		return nil
	}
	v := config.Duration(d.AsDuration())
	return &v
}

// uint32Ptr returns a wrapped value's number, nil when it is absent (0 stays a value).
func uint32Ptr(v *wrapperspb.UInt32Value) *uint32 {
	if v == nil {
		return nil
	}
	return new(v.GetValue())
}

// durOr returns d as a time.Duration, or def when nil.
func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}
