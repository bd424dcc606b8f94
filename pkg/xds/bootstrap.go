package xds

//lint:file-ignore SA1019 control planes still send Envoy's deprecated fields; they are read deliberately.

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// Registered so that a static cluster's typed_extension_protocol_options decode.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Defaults for the control-plane connection.
const (
	// DefaultKeepaliveInterval is how often an idle gRPC connection to the control plane is
	// pinged; DefaultKeepaliveTimeout is how long a ping may go unanswered before the
	// connection (and the ADS stream with it) is given up as half-open.
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
	// DefaultInitialFetchTimeout is Envoy's: how long readiness waits for the EDS and RDS
	// resources the first CDS and LDS name before it is released anyway.
	DefaultInitialFetchTimeout = 15 * time.Second
)

// Bootstrap is what the client needs from the config file's dynamic_resources and
// static_resources (or cluster_manager) to reach the control plane.
type Bootstrap struct {
	// ClusterName is the static cluster the ADS gRPC service points at ("" for a
	// google_grpc target_uri).
	ClusterName string
	// Targets are gRPC dial targets (host:port), tried in turn on each reconnect.
	Targets []string
	// CDS and LDS say which wildcard subscriptions to open (cds_config / lds_config).
	CDS, LDS       bool
	ConnectTimeout time.Duration
	// KeepaliveInterval and KeepaliveTimeout are the ADS cluster's
	// http2_protocol_options.connection_keepalive: a ping after this much silence, and the
	// stream given up when it goes unanswered this long. grpc-go raises an interval under
	// 10s to 10s.
	KeepaliveInterval   time.Duration
	KeepaliveTimeout    time.Duration
	InitialFetchTimeout time.Duration
}

// ParseBootstrap reads cfg's dynamic_resources. It returns nil and no error when the config
// has no dynamic_resources.ads_config (nothing to connect to).
//
// dynamic_resources is Envoy's v3 Bootstrap.DynamicResources in JSON: ads_config with
// api_type GRPC and grpc_services[0] naming either envoy_grpc.cluster_name or
// google_grpc.target_uri; lds_config / cds_config as {"ads":{}}. The named cluster is looked
// up first in static_resources.clusters (Envoy's form: STATIC or STRICT_DNS with
// load_assignment) and then in cluster_manager.clusters (MOSN's form: hosts).
func ParseBootstrap(cfg *config.Config) (*Bootstrap, error) {
	raw := cfg.DynamicResources
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var dr bootstrapv3.Bootstrap_DynamicResources
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &dr); err != nil {
		return nil, fmt.Errorf("dynamic_resources: %w", err)
	}
	ads := dr.GetAdsConfig()
	if ads == nil {
		if dr.GetLdsConfig() != nil || dr.GetCdsConfig() != nil {
			return nil, errors.New("dynamic_resources: lds_config/cds_config without ads_config: only ADS is supported")
		}
		return nil, nil
	}
	b := &Bootstrap{
		KeepaliveInterval:   DefaultKeepaliveInterval,
		KeepaliveTimeout:    DefaultKeepaliveTimeout,
		InitialFetchTimeout: DefaultInitialFetchTimeout,
		ConnectTimeout:      5 * time.Second,
	}
	switch ads.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_AGGREGATED_GRPC:
	default:
		return nil, fmt.Errorf("dynamic_resources.ads_config.api_type %v: only GRPC (state of the world) is supported", ads.GetApiType())
	}
	if v := ads.GetTransportApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return nil, fmt.Errorf("dynamic_resources.ads_config.transport_api_version %v: only V3 is supported", v)
	}
	for name, cs := range map[string]*corev3.ConfigSource{"lds_config": dr.GetLdsConfig(), "cds_config": dr.GetCdsConfig()} {
		if cs == nil {
			continue
		}
		if _, ok := cs.GetConfigSourceSpecifier().(*corev3.ConfigSource_Ads); !ok {
			return nil, fmt.Errorf("dynamic_resources.%s: only {\"ads\":{}} is supported", name)
		}
		if t := cs.GetInitialFetchTimeout(); t != nil {
			b.InitialFetchTimeout = t.AsDuration()
		}
	}
	b.LDS, b.CDS = dr.GetLdsConfig() != nil, dr.GetCdsConfig() != nil
	if !b.LDS && !b.CDS {
		return nil, errors.New("dynamic_resources: ads_config but neither lds_config nor cds_config: nothing to subscribe to")
	}
	gs := ads.GetGrpcServices()
	if len(gs) == 0 {
		return nil, errors.New("dynamic_resources.ads_config.grpc_services: empty")
	}
	if t := gs[0].GetTimeout(); t != nil {
		b.ConnectTimeout = t.AsDuration()
	}
	switch s := gs[0].GetTargetSpecifier().(type) {
	case *corev3.GrpcService_EnvoyGrpc_:
		b.ClusterName = s.EnvoyGrpc.GetClusterName()
		if b.ClusterName == "" {
			return nil, errors.New("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: empty")
		}
		if err := b.resolveCluster(cfg); err != nil {
			return nil, err
		}
	case *corev3.GrpcService_GoogleGrpc_:
		if s.GoogleGrpc.GetChannelCredentials() != nil {
			return nil, errors.New("dynamic_resources.ads_config.grpc_services[0].google_grpc.channel_credentials: TLS to the control plane is not supported")
		}
		if s.GoogleGrpc.GetTargetUri() == "" {
			return nil, errors.New("dynamic_resources.ads_config.grpc_services[0].google_grpc.target_uri: empty")
		}
		b.Targets = []string{s.GoogleGrpc.GetTargetUri()}
	default:
		return nil, errors.New("dynamic_resources.ads_config.grpc_services[0]: neither envoy_grpc nor google_grpc")
	}
	return b, nil
}

// resolveCluster finds the ADS cluster's addresses.
func (b *Bootstrap) resolveCluster(cfg *config.Config) error {
	if len(cfg.StaticResources) > 0 && string(cfg.StaticResources) != "null" {
		var sr struct {
			Clusters []json.RawMessage `json:"clusters"`
		}
		if err := json.Unmarshal(cfg.StaticResources, &sr); err != nil {
			return fmt.Errorf("static_resources: %w", err)
		}
		for i, raw := range sr.Clusters {
			var probe struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(raw, &probe) != nil || probe.Name != b.ClusterName {
				continue
			}
			var c clusterv3.Cluster
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &c); err != nil {
				return fmt.Errorf("static_resources.clusters[%d] (%s): %w", i, probe.Name, err)
			}
			if c.GetTransportSocket() != nil {
				return fmt.Errorf("static_resources.clusters[%d] (%s): transport_socket: TLS to the control plane is not supported", i, probe.Name)
			}
			cc, err := ConvertCluster(&c)
			if err != nil {
				return fmt.Errorf("static_resources.clusters[%d]: %w", i, err)
			}
			if cc.Cluster.Type != config.ClusterSimple && cc.Cluster.Type != config.ClusterStrictDNS {
				return fmt.Errorf("static_resources.clusters[%d] (%s): type %s: the ADS cluster must be STATIC or STRICT_DNS", i, probe.Name, cc.Cluster.Type)
			}
			for _, h := range cc.Cluster.Hosts {
				b.Targets = append(b.Targets, h.Address)
			}
			if len(b.Targets) == 0 {
				return fmt.Errorf("static_resources.clusters[%d] (%s): no endpoints in load_assignment", i, probe.Name)
			}
			if t := c.GetConnectTimeout(); t != nil {
				b.ConnectTimeout = t.AsDuration()
			}
			if ka := c.GetHttp2ProtocolOptions().GetConnectionKeepalive(); ka != nil {
				b.KeepaliveInterval = durOr(ka.GetInterval(), b.KeepaliveInterval)
				b.KeepaliveTimeout = durOr(ka.GetTimeout(), b.KeepaliveTimeout)
			}
			return nil
		}
	}
	for i := range cfg.ClusterManager.Clusters {
		c := &cfg.ClusterManager.Clusters[i]
		if c.Name != b.ClusterName {
			continue
		}
		for _, h := range c.Hosts {
			b.Targets = append(b.Targets, h.Address)
		}
		if len(b.Targets) == 0 {
			return fmt.Errorf("cluster_manager.clusters[%d] (%s): the ADS cluster has no hosts", i, c.Name)
		}
		b.ConnectTimeout = c.ConnectTimeout.Or(b.ConnectTimeout)
		return nil
	}
	return fmt.Errorf("dynamic_resources.ads_config: cluster %q is in neither static_resources.clusters nor cluster_manager.clusters", b.ClusterName)
}
