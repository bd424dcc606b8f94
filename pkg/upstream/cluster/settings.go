package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/upstream/healthcheck"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// maxAttemptsCap bounds max_connect_attempts (a dial tries at most this many hosts).
const maxAttemptsCap = 1024

// settings is a cluster's validated configuration: everything that can fail is checked
// here, before anything is published.
type settings struct {
	cfg            config.Cluster // as given, to detect unchanged clusters
	typ            string
	lbType         string
	factory        lb.Factory
	lbOpts         lb.Options
	connectTimeout time.Duration
	pickTimeout    time.Duration
	maxAttempts    int
	hosts          []hostSpec
	dnsRate        time.Duration        // STRICT_DNS
	dnsNetwork     string               // "ip", "ip4" or "ip6"
	hc             *healthcheck.Checker // nil: no active health checks
	outlier        *outlierSettings     // nil: no outlier detection
	limits         [numBreakers]int64   // circuit breakers
	budget         *budgetParams        // retry_budget; nil: off
	tls            *network.ClientTLS   // tls_context with status true (tls.go)
}

// hostSpec is one configured host entry. For STRICT_DNS a name expands to one host per
// resolved address, each inheriting the entry's weight and metadata.
type hostSpec struct {
	addr     string // as configured, "host:port"
	host     string
	port     uint16
	ip       netip.Addr // valid when host is a literal address
	hostname string
	weight   uint32
	meta     map[string]string
}

// prepare validates cfg and resolves its balancer. Errors name the cluster and the field.
func prepare(cfg config.Cluster, o *Options) (*settings, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("cluster with empty name")
	}
	fail := func(format string, a ...any) (*settings, error) {
		return nil, fmt.Errorf("cluster %q: %s", cfg.Name, fmt.Sprintf(format, a...))
	}
	s := &settings{cfg: cfg, typ: cfg.Type, lbType: cfg.LBType}
	if s.typ == "" {
		s.typ = config.DefaultClusterType
	}
	switch s.typ {
	case config.ClusterSimple, config.ClusterStrictDNS, config.ClusterEDS, config.ClusterOriginalDst:
	default:
		return fail("type: unknown %q (known: %v)", cfg.Type, config.ClusterTypes)
	}
	if s.lbType == "" {
		s.lbType = config.DefaultLBType
		if s.typ == config.ClusterOriginalDst {
			s.lbType = config.LBOriginalDst
		}
	}
	f, err := o.LBs.Get(s.lbType)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: lb_type: %w", cfg.Name, err)
	}
	if f == nil {
		return fail("lb_type %q: registered without a factory", s.lbType)
	}
	s.factory = f
	s.lbOpts = lb.Options{Rand: o.Rand, Now: o.Now}
	if lc := cfg.LBConfig; lc != nil {
		s.lbOpts.ChoiceCount = int(min(lc.ChoiceCount, 1<<16))
		s.lbOpts.TableSize = lc.MaglevTableSize
		s.lbOpts.Decay = lc.EWMADecay.Or(0)
		s.lbOpts.DefaultRTT = lc.EWMADefaultRTT.Or(0)
		s.lbOpts.ActiveRequestBias = lc.ActiveRequestBias
		if err := s.lbOpts.Validate(); err != nil {
			return fail("lbconfig: %v", err)
		}
	}
	if s.connectTimeout = cfg.ConnectTimeout.Or(config.DefaultConnectTimeout); s.connectTimeout <= 0 {
		return fail("connect_timeout %v: must be positive", s.connectTimeout)
	}
	if s.tls, err = network.ClientTLSConfig("tls_context", cfg.TLSContext, tlsLog(o, cfg.Name)); err != nil {
		return fail("%v", err)
	}
	if s.pickTimeout = cfg.PickTimeout.Or(config.DefaultPickTimeout); s.pickTimeout < 0 {
		return fail("pick_timeout %v: negative", s.pickTimeout)
	}
	s.maxAttempts = int(min(cfg.MaxConnectAttempts, maxAttemptsCap))
	if s.maxAttempts == 0 {
		s.maxAttempts = config.DefaultMaxConnectAttempts
	}
	seen := map[string]int{}
	for i, h := range cfg.Hosts {
		spec, err := parseHost(h)
		if err != nil {
			return fail("hosts[%d].address: %v", i, err)
		}
		if j, dup := seen[spec.addr]; dup {
			return fail("hosts[%d].address %q: duplicates hosts[%d]", i, h.Address, j)
		}
		seen[spec.addr] = i
		s.hosts = append(s.hosts, spec)
	}
	if s.typ == config.ClusterStrictDNS {
		if len(s.hosts) == 0 {
			return fail("STRICT_DNS needs at least one host to resolve")
		}
		if s.dnsRate = cfg.DNSRefreshRate.Or(config.DefaultDNSRefreshRate); s.dnsRate <= 0 {
			return fail("dns_refresh_rate %v: must be positive", s.dnsRate)
		}
	}
	if s.limits, err = breakerLimits(cfg.CircuitBreakers); err != nil {
		return fail("%v", err)
	}
	if s.budget, err = newBudget(cfg.RetryBudget); err != nil {
		return fail("%v", err)
	}
	if cfg.HealthCheck != nil {
		if s.hc, err = healthcheck.New(cfg.HealthCheck, healthcheck.Options{Dial: o.Dial, Rand: o.Rand}); err != nil {
			return fail("%v", err)
		}
	}
	if cfg.OutlierDetection != nil {
		if s.outlier, err = newOutlier(cfg.OutlierDetection); err != nil {
			return fail("%v", err)
		}
	}
	switch cfg.DNSLookupFamily {
	case "", "AUTO":
		s.dnsNetwork = "ip"
	case "V4_ONLY":
		s.dnsNetwork = "ip4"
	case "V6_ONLY":
		s.dnsNetwork = "ip6"
	default:
		return fail("dns_lookup_family: unknown %q (known: %v)", cfg.DNSLookupFamily, config.DNSLookupFamilies)
	}
	return s, nil
}

// tlsLog is the logger of a cluster's TLS certificate reloads.
func tlsLog(o *Options, name string) *zap.Logger {
	if o == nil || o.Log == nil {
		return nil
	}
	return o.Log.With(zap.String(log.FieldCluster, name))
}

func parseHost(h config.Host) (hostSpec, error) {
	host, port, err := net.SplitHostPort(h.Address)
	if err != nil {
		return hostSpec{}, fmt.Errorf("%q: %v", h.Address, err)
	}
	if host == "" {
		return hostSpec{}, fmt.Errorf("%q: empty host", h.Address)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return hostSpec{}, fmt.Errorf("%q: port must be 1..65535", h.Address)
	}
	spec := hostSpec{addr: h.Address, host: host, port: uint16(p), hostname: h.Hostname, weight: max(h.Weight, 1), meta: h.MetaData}
	if ip, err := netip.ParseAddr(host); err == nil {
		spec.ip = ip.Unmap()
		spec.addr = netip.AddrPortFrom(spec.ip, spec.port).String() // canonical form
	}
	return spec, nil
}

// dnsTargetsEqual reports whether two settings resolve the same names the same way, so a
// running refresher can be kept.
func dnsTargetsEqual(a, b *settings) bool {
	if a.typ != b.typ || a.dnsRate != b.dnsRate || a.dnsNetwork != b.dnsNetwork || len(a.hosts) != len(b.hosts) {
		return false
	}
	for i := range a.hosts {
		if a.hosts[i].addr != b.hosts[i].addr {
			return false
		}
	}
	return true
}

// connGens hands out connection-settings generations (Cluster.connGen), unique in the
// process, so that a cluster removed and added again under its name gets new pool keys too.
var connGens atomic.Uint64

// connSettingsEqual reports whether connections made under a are made as b would make them,
// so that they may carry b's requests. Only what shapes an established connection counts:
// tls_context (on or off, server name, CA, client certificate, ALPN, ...). connect_timeout
// bounds a connect, not the connection made; the upstream protocol is the route's or the
// proxy's, and pools keep each protocol's connections apart. A setting that shapes a
// connection when it is made (a per-connection buffer limit, if applied one day) belongs
// here.
func connSettingsEqual(a, b *settings) bool {
	if (a.tls == nil) != (b.tls == nil) {
		return false
	}
	return a.tls == nil || reflect.DeepEqual(a.cfg.TLSContext, b.cfg.TLSContext)
}

// sameConfig reports whether a cluster's config is unchanged (then nothing is rebuilt).
func sameConfig(a, b *settings) bool { return reflect.DeepEqual(a.cfg, b.cfg) }
