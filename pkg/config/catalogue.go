package config

import (
	"fmt"
	"slices"
	"strings"
)

// catalogue.go lists the names MOSN's format defines. Validate rejects any other name with
// an error that lists these (MOSN itself falls back silently). The lists are variables so a
// build that registers more extensions can extend them before validating.

// Networks a listener may use.
const (
	NetworkTCP  = "tcp"
	NetworkUDP  = "udp"
	NetworkUnix = "unix"
)

// Networks lists the listener networks.
var Networks = []string{NetworkTCP, NetworkUDP, NetworkUnix}

// Built-in network and listener filter types.
const (
	FilterProxy               = "proxy"
	FilterTCPProxy            = "tcp_proxy"
	FilterUDPProxy            = "udp_proxy"
	ListenerFilterOriginalDst = "original_dst"
)

// NetworkFilterTypes lists the network filters (filter_chains[].filters[].type).
var NetworkFilterTypes = []string{FilterProxy, FilterTCPProxy, FilterUDPProxy}

// TerminalNetworkFilterTypes are the network filters that take the connection over; a chain
// holds exactly one, last.
var TerminalNetworkFilterTypes = []string{FilterProxy, FilterTCPProxy, FilterUDPProxy}

// ListenerFilterTypes lists the listener filters (listener_filters[].type).
var ListenerFilterTypes = []string{ListenerFilterOriginalDst}

// StreamFilterTypes lists the stream filters (stream_filters[].type).
var StreamFilterTypes = []string{"fault", "payload_limit", "ip_access", "header_mutation", "mirror"}

// RetiredStreamFilterTypes are stream filters MOSN has removed; a config naming one still
// loads, with a warning, and the filter is skipped.
var RetiredStreamFilterTypes = []string{"healthcheck"}

// Protocol names as MOSN spells them. Validate matches them case-insensitively; use
// ParseProtocol to get the canonical spelling.
const (
	ProtocolHTTP1  = "Http1"
	ProtocolHTTP2  = "Http2"
	ProtocolAuto   = "Auto"
	ProtocolBolt   = "bolt"
	ProtocolBoltV2 = "boltv2"
	ProtocolDubbo  = "dubbo"
	// ProtocolX is MOSN's legacy "X": the real protocol is extend_config.sub_protocol.
	ProtocolX = "X"
)

// Protocols lists the downstream_protocol / upstream_protocol names.
var Protocols = []string{ProtocolHTTP1, ProtocolHTTP2, ProtocolAuto, ProtocolBolt, ProtocolBoltV2, ProtocolDubbo, ProtocolX}

// SubProtocols lists the extend_config.sub_protocol names (the xprotocol family).
var SubProtocols = []string{ProtocolBolt, ProtocolBoltV2, ProtocolDubbo}

// Cluster types.
const (
	ClusterSimple      = "SIMPLE"
	ClusterStrictDNS   = "STRICT_DNS"
	ClusterEDS         = "EDS"
	ClusterOriginalDst = "ORIGINAL_DST"
)

// ClusterTypes lists the cluster types.
var ClusterTypes = []string{ClusterSimple, ClusterStrictDNS, ClusterEDS, ClusterOriginalDst}

// Load balancer types (MOSN's names).
const (
	LBRoundRobin         = "LB_ROUNDROBIN"
	LBRandom             = "LB_RANDOM"
	LBWeightedRoundRobin = "LB_WEIGHTED_ROUNDROBIN"
	LBLeastRequest       = "LB_LEAST_REQUEST"
	LBLeastConnection    = "LB_LEAST_CONNECTION"
	LBPeakEWMA           = "LB_PEAK_EWMA"
	LBMaglev             = "LB_MAGLEV"
	LBOriginalDst        = "LB_ORIGINAL_DST"
)

// LBTypes lists the load balancer types.
var LBTypes = []string{LBRoundRobin, LBRandom, LBWeightedRoundRobin, LBLeastRequest, LBLeastConnection, LBPeakEWMA, LBMaglev, LBOriginalDst}

// MetricSinkTypes lists metrics.sinks[].type.
var MetricSinkTypes = []string{"prometheus"}

// ExtendTypes lists extends[].type.
var ExtendTypes = []string{"dubbo_registry"}

// DNSLookupFamilies lists dns_lookup_family ("" is AUTO).
var DNSLookupFamilies = []string{"V4_ONLY", "V6_ONLY", "AUTO"}

// CircuitBreakerPriorities lists circuit_breakers[].priority ("" is DEFAULT).
var CircuitBreakerPriorities = []string{"DEFAULT", "HIGH"}

// LogLevels lists default_log_level / log_level, matched case-insensitively ("" is INFO).
var LogLevels = []string{"TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"}

// unknownName is the error message for a name not in known.
func unknownName(name string, known []string) string {
	msg := fmt.Sprintf("unknown %q (known: %s)", name, strings.Join(known, ", "))
	for _, k := range known {
		if strings.EqualFold(k, name) && k != name {
			return msg + "; names are case-sensitive, did you mean " + k + "?"
		}
	}
	return msg
}

// ProtocolChoice is a resolved downstream_protocol or upstream_protocol.
type ProtocolChoice struct {
	// Names are canonical protocol names: one for a plain protocol (for X, the
	// sub_protocol), the subset to sniff among for a comma list, none for plain Auto.
	Names []string
	// Auto means: sniff the protocol, among Names, or among all protocols when Names is empty.
	Auto bool
}

// ParseProtocol resolves a protocol setting, matching names case-insensitively: a single
// name, "Auto", a comma list ("Http1,Http2": Auto over that subset) or the legacy "X", which
// takes its protocol from subProtocol (extend_config.sub_protocol, itself a name or a comma
// list of bolt, boltv2, dubbo). "" resolves to the zero ProtocolChoice.
func ParseProtocol(value, subProtocol string) (ProtocolChoice, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return ProtocolChoice{}, nil
	}
	if strings.Contains(value, ",") {
		var pc ProtocolChoice
		pc.Auto = true
		for part := range strings.SplitSeq(value, ",") {
			name, ok := canonical(strings.TrimSpace(part), Protocols)
			switch {
			case strings.TrimSpace(part) == "":
				return ProtocolChoice{}, fmt.Errorf("empty name in protocol list %q", value)
			case !ok:
				return ProtocolChoice{}, fmt.Errorf("%s in list %q", unknownName(strings.TrimSpace(part), Protocols), value)
			case name == ProtocolAuto || name == ProtocolX:
				return ProtocolChoice{}, fmt.Errorf("%s cannot be part of a protocol list %q", name, value)
			case slices.Contains(pc.Names, name):
				return ProtocolChoice{}, fmt.Errorf("%s twice in protocol list %q", name, value)
			}
			pc.Names = append(pc.Names, name)
		}
		return pc, nil
	}
	name, ok := canonical(value, Protocols)
	if !ok {
		return ProtocolChoice{}, fmt.Errorf("%s", unknownName(value, Protocols))
	}
	switch name {
	case ProtocolAuto:
		return ProtocolChoice{Auto: true}, nil
	case ProtocolX:
		subs, err := parseSubProtocol(subProtocol)
		if err != nil {
			return ProtocolChoice{}, fmt.Errorf("extend_config.sub_protocol: %w", err)
		}
		if len(subs) == 0 {
			return ProtocolChoice{}, fmt.Errorf("protocol X needs extend_config.sub_protocol (one of %s)", strings.Join(SubProtocols, ", "))
		}
		return ProtocolChoice{Names: subs, Auto: len(subs) > 1}, nil
	}
	return ProtocolChoice{Names: []string{name}}, nil
}

// parseSubProtocol resolves extend_config.sub_protocol: "" (none), a name or a comma list.
func parseSubProtocol(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		name, ok := canonical(part, SubProtocols)
		if !ok {
			return nil, fmt.Errorf("%s", unknownName(part, SubProtocols))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// SubProtocol returns extend_config.sub_protocol when it is a string.
func (p *ProxyConfig) SubProtocol() string {
	s, _ := p.ExtendConfig["sub_protocol"].(string)
	return s
}

// canonical finds name in known, case-insensitively.
func canonical(name string, known []string) (string, bool) {
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}
