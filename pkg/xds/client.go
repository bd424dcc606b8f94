// Package xds is mosnlite's xDS client: one ADS stream (Envoy v3 StreamAggregatedResources,
// state of the world) to the control plane named in the config's dynamic_resources. LDS, RDS,
// CDS and EDS resources are converted to the same config types the file produces and applied
// through the server's runtime API under the owner "xds".
//
// Protocol. CDS and LDS are wildcard subscriptions opened first. After a CDS update is applied
// the client subscribes EDS to the EDS clusters' service names; after an LDS update, RDS to the
// route configuration names the listeners reference. Each response is converted and applied,
// then ACKed (version_info and response_nonce of the response). A response that fails to
// convert or apply is NACKed (the last accepted version, the response's nonce and an
// error_detail) and the previous config keeps serving; when the control plane sends the same
// rejected version again, the NACK waits a growing delay (up to 10s) so a control plane that
// answers every NACK with the same resources does not spin.
//
// Connection. gRPC keepalive pings notice a half-open connection (no answer to a ping within
// the keepalive timeout ends the stream; grpc-go pings no more often than every 10s). A
// broken stream is retried on the next of the ADS cluster's addresses, with jittered
// exponential back-off (500ms doubling up to 30s, each wait drawn from [d/2, d]; reset after
// a stream that got a response). On reconnect the client sends its accepted versions and
// current resource names so the control plane can resend only what changed. While the
// control plane is unreachable the last applied config keeps serving.
//
// Readiness. The client holds the server's readiness ("xds") from New until the first full
// set is applied: CDS, a load assignment for every EDS cluster, LDS and every route
// configuration the listeners reference. CDS and LDS hold it however long they take. The
// initial fetch timeout (15s, or the bootstrap's initial_fetch_timeout; 0 waits forever)
// starts once CDS and LDS are in, when the EDS and RDS subscriptions they imply start (as
// Envoy's does); EDS and RDS resources still missing when it ends no longer hold readiness.
package xds

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
)

// Owner is the owner name the client applies its config under.
const Owner = "xds"

// Type URLs of the four resource types.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// Target is what the client applies config to: the server's runtime config API.
type Target interface {
	SetClusters(owner string, cs []config.Cluster) error
	SetClusterHosts(cluster string, hosts []config.Host) error
	SetRouters(owner string, rs []config.RouterCfg) error
	SetListeners(owner string, ls []config.Listener) error
	HoldReady(owner string) (release func())
}

// Options configure a Client.
type Options struct {
	// NodeID and NodeCluster identify this proxy to the control plane (node.id, node.cluster).
	NodeID      string
	NodeCluster string
	Log         *zap.Logger
	// BackoffBase and BackoffMax bound the reconnect back-off (defaults 500ms and 30s).
	BackoffBase, BackoffMax time.Duration
	// NackDelayMax caps the delay before re-NACKing a version already rejected (default 10s).
	NackDelayMax time.Duration
	// UserAgent is the node's user_agent_version (default "dev").
	UserAgent string
	// Metrics, when set, counts updates (mosnlite_xds_updates_total) and lost streams
	// (mosnlite_xds_disconnects_total), and shows the stream state (mosnlite_xds_connected).
	Metrics *metrics.Set
}

// Stats are counters for tests and the admin endpoint.
type Stats struct {
	Connects, ACKs, NACKs, Responses uint64
	Disconnects                      uint64 // open streams that ended while the client ran
}

// Client is one ADS client. Run it once.
type Client struct {
	b       *Bootstrap
	o       Options
	t       Target
	log     *zap.Logger
	node    *corev3.Node
	release func()

	connects, disconnects, acks, nacks, responses atomic.Uint64

	// Everything below is owned by the Run goroutine.
	types       map[string]*typeState
	clusters    map[string]ConvertedCluster  // applied CDS, by cluster name
	assignments map[string][]config.Host     // applied EDS, by service name
	listeners   map[string]ConvertedListener // applied LDS, by listener name
	// wantListeners is the LDS set last accepted. It differs from listeners while a changed
	// listener warms: the one it replaces keeps serving until the route configurations the
	// new one names have all arrived (warming), or warmTimer fires.
	wantListeners map[string]ConvertedListener
	warming       []string // names of the listeners warming
	warmTimer     *time.Timer
	rds           map[string]config.RouterCfg // applied RDS, by route configuration name
	routers       []config.RouterCfg          // last router set given to SetRouters
	ready         bool
	// fetchTimer is the initial fetch timeout: started when CDS and LDS are first in; nil
	// before, and after it fired (fetchExpired) or readiness was released.
	fetchTimer   *time.Timer
	fetchExpired bool
}

// typeState is the protocol state of one resource type on the stream.
type typeState struct {
	url      string
	version  string   // last accepted version_info
	nonce    string   // nonce of the last response seen
	names    []string // subscribed names; nil: wildcard
	wildcard bool
	applied  bool // a response was applied at least once
	// NACK pacing: the last rejected version and how often in a row.
	rejected      string
	rejectedCount int
	pending       *discoveryv3.DiscoveryRequest // a NACK waiting for nackAt
	nackAt        time.Time
}

// New builds a client; it takes the server's readiness hold at once.
func New(b *Bootstrap, t Target, o Options) (*Client, error) {
	if b == nil || len(b.Targets) == 0 {
		return nil, errors.New("xds: no control plane address")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.NackDelayMax <= 0 {
		o.NackDelayMax = 10 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "dev"
	}
	if o.NodeID == "" {
		return nil, errors.New("xds: no node id (--service-node / MOSNLITE_SERVICE_NODE)")
	}
	c := &Client{
		b: b, o: o, t: t, log: o.Log,
		node: &corev3.Node{
			Id:                   o.NodeID,
			Cluster:              o.NodeCluster,
			UserAgentName:        "mosnlite",
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: o.UserAgent},
		},
		types:       map[string]*typeState{},
		clusters:    map[string]ConvertedCluster{},
		assignments: map[string][]config.Host{},
		listeners:   map[string]ConvertedListener{},
		rds:         map[string]config.RouterCfg{},
	}
	if b.CDS {
		c.types[ClusterType] = &typeState{url: ClusterType, wildcard: true}
		c.types[EndpointType] = &typeState{url: EndpointType}
	}
	if b.LDS {
		c.types[ListenerType] = &typeState{url: ListenerType, wildcard: true}
		c.types[RouteType] = &typeState{url: RouteType}
	}
	c.release = t.HoldReady(Owner)
	return c, nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Connects: c.connects.Load(), Disconnects: c.disconnects.Load(), ACKs: c.acks.Load(), NACKs: c.nacks.Load(), Responses: c.responses.Load()}
}

// Run connects and keeps the stream up until ctx ends. It returns nil on ctx end.
func (c *Client) Run(ctx context.Context) error {
	defer c.stopFetchTimer()
	defer c.stopWarmTimer()
	bo := reconnectBackoff{base: c.o.BackoffBase, max: c.o.BackoffMax}
	for attempt := 0; ; attempt++ {
		target := c.b.Targets[attempt%len(c.b.Targets)]
		got, err := c.session(ctx, target)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			bo.reset()
		}
		wait := bo.next()
		c.log.Warn("xds: stream to the control plane ended; retrying",
			zap.String("target", target), zap.Error(err), zap.Duration("in", wait))
		if !c.sleep(ctx, wait) {
			return nil
		}
	}
}

// sleep waits d (serving the initial fetch timeout meanwhile); false when ctx ended.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-c.fetchC():
			c.expireFetch()
		case <-c.warmC():
			c.expireWarm() // its subscription change goes out with the next stream's
		}
	}
}

// reconnectBackoff is the wait before the next ADS stream: exponential from base, doubling
// after each attempt, capped at max, each wait drawn uniformly from [d/2, d] (equal jitter:
// never under half, so a dead control plane is not hammered, and spread so that proxies that
// lost the same control plane do not come back in step). reset returns to base.
type reconnectBackoff struct {
	base, max, cur time.Duration
}

func (b *reconnectBackoff) next() time.Duration {
	if b.cur <= 0 {
		b.cur = b.base
	}
	d := min(b.cur, b.max)
	b.cur = min(b.cur*2, b.max)
	return d/2 + rand.N(d/2+1)
}

func (b *reconnectBackoff) reset() { b.cur = b.base }

// fetchC is the initial fetch timer's channel (nil, never ready, while none runs).
func (c *Client) fetchC() <-chan time.Time {
	if c.fetchTimer == nil {
		return nil
	}
	return c.fetchTimer.C
}

func (c *Client) stopFetchTimer() {
	if c.fetchTimer != nil {
		c.fetchTimer.Stop()
		c.fetchTimer = nil
	}
}

func (c *Client) releaseReady() {
	if c.release != nil {
		c.release()
		c.release = nil
	}
}

type recvResult struct {
	resp *discoveryv3.DiscoveryResponse
	err  error
}

// session runs one ADS stream; got reports whether a response arrived on it.
func (c *Client) session(ctx context.Context, target string) (got bool, err error) {
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.b.KeepaliveInterval,
			Timeout:             c.b.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: c.b.ConnectTimeout}),
	)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, err
	}
	c.connects.Add(1)
	m := c.o.Metrics
	if m != nil {
		m.XDSConnected.Set(1)
	}
	defer func() {
		// An open stream that ends while the client still runs is a disconnect.
		lost := ctx.Err() == nil
		if lost {
			c.disconnects.Add(1)
		}
		if m != nil {
			m.XDSConnected.Set(0)
			if lost {
				m.XDSDisconnects.Inc()
			}
		}
	}()
	c.log.Info("xds: ADS stream open", zap.String("target", target), zap.String("node", c.o.NodeID))

	recv := make(chan recvResult, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			select {
			case recv <- recvResult{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	first := true
	send := func(req *discoveryv3.DiscoveryRequest) error {
		if first {
			req.Node = c.node
			first = false
		}
		return stream.Send(req)
	}
	// Subscriptions: the wildcard types first, then what is already known (a reconnect).
	for _, url := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
		ts := c.types[url]
		if ts == nil {
			continue
		}
		ts.nonce, ts.pending = "", nil
		if !ts.wildcard && len(ts.names) == 0 {
			continue
		}
		if err := send(c.request(ts)); err != nil {
			return false, err
		}
	}
	nackTimer := time.NewTimer(time.Hour)
	nackTimer.Stop()
	defer nackTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-c.fetchC():
			c.expireFetch()
		case <-c.warmC():
			for _, url := range c.expireWarm() {
				if err := send(c.request(c.types[url])); err != nil {
					return got, err
				}
			}
		case <-nackTimer.C:
		case r := <-recv:
			if r.err != nil {
				return got, r.err
			}
			got = true
			reqs := c.handle(r.resp)
			for _, req := range reqs {
				if err := send(req); err != nil {
					return got, err
				}
			}
		}
		// Send the NACKs whose delay is over; re-arm the timer for the next.
		now := time.Now()
		var next time.Time
		for _, url := range []string{ClusterType, EndpointType, ListenerType, RouteType} {
			ts := c.types[url]
			if ts == nil || ts.pending == nil {
				continue
			}
			if !ts.nackAt.After(now) {
				req := ts.pending
				ts.pending = nil
				c.nacks.Add(1)
				if err := send(req); err != nil {
					return got, err
				}
				continue
			}
			if next.IsZero() || ts.nackAt.Before(next) {
				next = ts.nackAt
			}
		}
		if !next.IsZero() {
			nackTimer.Reset(time.Until(next))
		}
	}
}

// request is a subscription request for ts carrying its accepted version and last nonce.
func (c *Client) request(ts *typeState) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		TypeUrl:       ts.url,
		VersionInfo:   ts.version,
		ResponseNonce: ts.nonce,
		ResourceNames: slices.Clone(ts.names),
	}
}

// handle applies one response and returns the requests to send now (ACK plus subscription
// changes). A NACK is queued on the type's state instead.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse) []*discoveryv3.DiscoveryRequest {
	c.responses.Add(1)
	ts := c.types[resp.GetTypeUrl()]
	if ts == nil {
		c.log.Warn("xds: response for a type not subscribed; ignored", zap.String("type", resp.GetTypeUrl()))
		return nil
	}
	ts.nonce = resp.GetNonce()
	ts.pending = nil
	var (
		err  error
		subs []string // types whose subscription changed
	)
	switch ts.url {
	case ClusterType:
		subs, err = c.applyClusters(resp)
	case EndpointType:
		err = c.applyEndpoints(resp)
	case ListenerType:
		subs, err = c.applyListeners(resp)
	case RouteType:
		subs, err = c.applyRoutes(resp)
	}
	log := c.log.With(zap.String("type", shortType(ts.url)), zap.String("version", resp.GetVersionInfo()),
		zap.Int("resources", len(resp.GetResources())))
	if err != nil {
		log.Warn("xds: update rejected; previous config keeps serving", zap.Error(err))
		c.count(ts.url, "nack")
		if ts.rejected == resp.GetVersionInfo() {
			ts.rejectedCount++
		} else {
			ts.rejected, ts.rejectedCount = resp.GetVersionInfo(), 0
		}
		req := c.request(ts)
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		ts.pending = req
		ts.nackAt = time.Now()
		if ts.rejectedCount > 0 {
			d := min(250*time.Millisecond<<min(ts.rejectedCount, 10), c.o.NackDelayMax)
			ts.nackAt = ts.nackAt.Add(d)
		}
		return nil
	}
	log.Info("xds: update applied")
	c.count(ts.url, "ack")
	ts.version, ts.applied = resp.GetVersionInfo(), true
	ts.rejected, ts.rejectedCount = "", 0
	c.acks.Add(1)
	reqs := []*discoveryv3.DiscoveryRequest{c.request(ts)}
	for _, url := range subs {
		if url != ts.url { // the ACK carries its own type's subscription already
			reqs = append(reqs, c.request(c.types[url]))
		}
	}
	c.checkReady()
	return reqs
}

func (c *Client) count(url, result string) {
	if m := c.o.Metrics; m != nil {
		m.XDSUpdates.WithLabelValues(shortType(url), result).Inc()
	}
}

func shortType(url string) string {
	switch url {
	case ClusterType:
		return "CDS"
	case EndpointType:
		return "EDS"
	case ListenerType:
		return "LDS"
	case RouteType:
		return "RDS"
	}
	return url
}

// applyClusters handles a CDS response (the full set of clusters).
func (c *Client) applyClusters(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	next := make(map[string]ConvertedCluster, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		var pc clusterv3.Cluster
		if err := a.UnmarshalTo(&pc); err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		cc, err := ConvertCluster(&pc)
		if err != nil {
			return nil, err
		}
		if _, dup := next[cc.Cluster.Name]; dup {
			return nil, fmt.Errorf("cluster %q: sent twice", cc.Cluster.Name)
		}
		next[cc.Cluster.Name] = cc
	}
	if !reflect.DeepEqual(next, c.clusters) || !c.types[ClusterType].applied {
		list := make([]config.Cluster, 0, len(next))
		for _, name := range sortedKeys(next) {
			cc := next[name].Cluster
			if cc.Type == config.ClusterEDS {
				// A rebuilt EDS cluster keeps the hosts EDS gave it.
				cc.Hosts = c.assignments[next[name].ServiceName]
			}
			list = append(list, cc)
		}
		if err := c.t.SetClusters(Owner, list); err != nil {
			return nil, err
		}
	}
	c.clusters = next
	// EDS subscription: the service names of the EDS clusters.
	var names []string
	for _, cc := range next {
		if cc.Cluster.Type == config.ClusterEDS && !slices.Contains(names, cc.ServiceName) {
			names = append(names, cc.ServiceName)
		}
	}
	sort.Strings(names)
	for n := range c.assignments {
		if !slices.Contains(names, n) {
			delete(c.assignments, n)
		}
	}
	eds := c.types[EndpointType]
	if !slices.Equal(names, eds.names) {
		eds.names = names
		return []string{EndpointType}, nil
	}
	return nil, nil
}

// applyEndpoints handles an EDS response (some or all of the subscribed assignments).
func (c *Client) applyEndpoints(resp *discoveryv3.DiscoveryResponse) error {
	eds := c.types[EndpointType]
	type update struct {
		name  string
		hosts []config.Host
	}
	var updates []update
	for i, a := range resp.GetResources() {
		var la endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&la); err != nil {
			return fmt.Errorf("resources[%d]: %w", i, err)
		}
		if !slices.Contains(eds.names, la.GetClusterName()) {
			continue // not (or no longer) subscribed
		}
		hosts, err := ConvertLoadAssignment(&la)
		if err != nil {
			return fmt.Errorf("cluster load assignment %q: %w", la.GetClusterName(), err)
		}
		if hosts == nil {
			hosts = []config.Host{}
		}
		updates = append(updates, update{la.GetClusterName(), hosts})
	}
	for _, u := range updates {
		if old, ok := c.assignments[u.name]; ok && reflect.DeepEqual(old, u.hosts) {
			continue
		}
		for _, name := range sortedKeys(c.clusters) {
			cc := c.clusters[name]
			if cc.Cluster.Type != config.ClusterEDS || cc.ServiceName != u.name {
				continue
			}
			if err := c.t.SetClusterHosts(name, u.hosts); err != nil {
				return fmt.Errorf("cluster %q: %w", name, err)
			}
		}
		c.assignments[u.name] = u.hosts
	}
	return nil
}

// applyListeners handles an LDS response (the full set of listeners).
func (c *Client) applyListeners(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	next := make(map[string]ConvertedListener, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		var pl listenerv3.Listener
		if err := a.UnmarshalTo(&pl); err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		cl, err := ConvertListener(&pl)
		if err != nil {
			return nil, err
		}
		if _, dup := next[cl.Listener.Name]; dup {
			return nil, fmt.Errorf("listener %q: sent twice", cl.Listener.Name)
		}
		if len(cl.Ignored) > 0 {
			c.log.Debug("xds: listener fields ignored", zap.String("listener", cl.Listener.Name), zap.Strings("fields", cl.Ignored))
		}
		next[cl.Listener.Name] = cl
	}
	return c.setListeners(next, false)
}

// setListeners applies the LDS set want. A listener that replaces one in place and names
// RDS route configurations not received yet warms, as Envoy's do: the old one keeps
// serving (and its route configurations stay subscribed) until they have all arrived, so
// that no request on the changed listener meets the placeholder router (every request
// 404) meanwhile; force (the warm timer fired) applies it without them. It returns the
// types whose subscription changed.
func (c *Client) setListeners(want map[string]ConvertedListener, force bool) ([]string, error) {
	next := make(map[string]ConvertedListener, len(want))
	var warming []string
	for name, cl := range want {
		if old, ok := c.listeners[name]; ok && !force && !reflect.DeepEqual(old, cl) && !c.routesIn(cl) {
			next[name] = old
			warming = append(warming, name)
			continue
		}
		next[name] = cl
	}
	sort.Strings(warming)
	var names []string
	for _, set := range []map[string]ConvertedListener{next, want} {
		for _, cl := range set {
			for _, n := range cl.RDSNames {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
		}
	}
	sort.Strings(names)
	if !reflect.DeepEqual(next, c.listeners) || !c.types[ListenerType].applied {
		// Routers first (the listeners' proxy filters look theirs up when built), keeping
		// the old ones the current listeners use until those are replaced.
		oldRouters := c.routers
		routers := c.routerSet(next, names, c.rds)
		if err := c.setRouters(unionRouters(routers, oldRouters)); err != nil {
			return nil, err
		}
		list := make([]config.Listener, 0, len(next))
		for _, name := range sortedKeys(next) {
			list = append(list, next[name].Listener)
		}
		if err := c.t.SetListeners(Owner, list); err != nil {
			if rerr := c.setRouters(oldRouters); rerr != nil {
				c.log.Error("xds: restoring the previous routers failed", zap.Error(rerr))
			}
			return nil, err
		}
		if err := c.setRouters(routers); err != nil {
			c.log.Warn("xds: removing unused routers failed", zap.Error(err))
		}
	}
	if !slices.Equal(warming, c.warming) {
		if len(warming) > 0 {
			c.log.Info("xds: changed listeners wait for their route configurations; the old ones keep serving",
				zap.Strings("listeners", warming))
		} else {
			c.log.Info("xds: no listener waits for its route configurations any more", zap.Strings("were", c.warming), zap.Bool("timed_out", force))
		}
	}
	c.listeners, c.wantListeners, c.warming = next, want, warming
	switch {
	case len(warming) == 0:
		c.stopWarmTimer()
	case c.warmTimer == nil && c.b.InitialFetchTimeout > 0:
		c.warmTimer = time.NewTimer(c.b.InitialFetchTimeout)
	}
	for n := range c.rds {
		if !slices.Contains(names, n) {
			delete(c.rds, n)
		}
	}
	rds := c.types[RouteType]
	if !slices.Equal(names, rds.names) {
		rds.names = names
		return []string{RouteType}, nil
	}
	return nil, nil
}

// routesIn reports whether every RDS route configuration cl names has arrived.
func (c *Client) routesIn(cl ConvertedListener) bool {
	for _, n := range cl.RDSNames {
		if _, ok := c.rds[n]; !ok {
			return false
		}
	}
	return true
}

// warmC is the warm timer's channel (nil, never ready, while no listener warms).
func (c *Client) warmC() <-chan time.Time {
	if c.warmTimer == nil {
		return nil
	}
	return c.warmTimer.C
}

func (c *Client) stopWarmTimer() {
	if c.warmTimer != nil {
		c.warmTimer.Stop()
		c.warmTimer = nil
	}
}

// expireWarm applies the warming listeners without the route configurations still
// missing (the initial fetch timeout is over, as Envoy's warming ends); it returns the
// types whose subscription changed.
func (c *Client) expireWarm() []string {
	c.warmTimer = nil
	c.log.Warn("xds: changed listeners replace the old ones before their route configurations arrived",
		zap.Strings("listeners", c.warming), zap.Duration("timeout", c.b.InitialFetchTimeout))
	subs, err := c.setListeners(c.wantListeners, true)
	if err != nil {
		c.log.Error("xds: applying the warmed listeners failed; the old ones keep serving", zap.Error(err))
	}
	return subs
}

// applyRoutes handles an RDS response (some or all of the subscribed route configurations).
// Listeners warming for these route configurations are applied once all theirs are in.
func (c *Client) applyRoutes(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	rdsState := c.types[RouteType]
	next := make(map[string]config.RouterCfg, len(c.rds))
	for k, v := range c.rds {
		next[k] = v
	}
	for i, a := range resp.GetResources() {
		var rc routev3.RouteConfiguration
		if err := a.UnmarshalTo(&rc); err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		if !slices.Contains(rdsState.names, rc.GetName()) {
			continue
		}
		r, err := ConvertRouteConfiguration(rc.GetName(), &rc)
		if err != nil {
			return nil, err
		}
		next[rc.GetName()] = r
	}
	if !reflect.DeepEqual(next, c.rds) || !rdsState.applied {
		if err := c.setRouters(c.routerSet(c.listeners, rdsState.names, next)); err != nil {
			return nil, err
		}
	}
	c.rds = next
	if len(c.warming) == 0 {
		return nil, nil
	}
	// The LDS update that made them warm was accepted: a listener that cannot be
	// applied now is logged, not held against this RDS update.
	subs, err := c.setListeners(c.wantListeners, false)
	if err != nil {
		c.log.Error("xds: applying the warmed listeners failed; the old ones keep serving", zap.Error(err))
	}
	return subs, nil
}

// routerSet is the owner's full router list: the listeners' inline route configs, the RDS
// configs received, and an empty placeholder (every request 404) for each referenced route
// configuration not received yet, so that a listener can be built before its routes arrive.
func (c *Client) routerSet(ls map[string]ConvertedListener, rdsNames []string, rds map[string]config.RouterCfg) []config.RouterCfg {
	var out []config.RouterCfg
	for _, name := range sortedKeys(ls) {
		out = append(out, ls[name].Routers...)
	}
	for _, n := range rdsNames {
		if r, ok := rds[n]; ok {
			out = append(out, r)
		} else {
			out = append(out, config.RouterCfg{RouterConfigName: n})
		}
	}
	return out
}

// unionRouters is a plus the routers of b whose names a lacks.
func unionRouters(a, b []config.RouterCfg) []config.RouterCfg {
	out := slices.Clone(a)
	for _, r := range b {
		if !slices.ContainsFunc(a, func(x config.RouterCfg) bool { return x.RouterConfigName == r.RouterConfigName }) {
			out = append(out, r)
		}
	}
	return out
}

func (c *Client) setRouters(rs []config.RouterCfg) error {
	if reflect.DeepEqual(rs, c.routers) && c.routers != nil {
		return nil
	}
	if rs == nil {
		rs = []config.RouterCfg{}
	}
	if err := c.t.SetRouters(Owner, rs); err != nil {
		return err
	}
	c.routers = rs
	return nil
}

// checkReady releases readiness once the first full set is applied.
func (c *Client) checkReady() {
	if c.ready {
		return
	}
	if missing := c.missing(); len(missing) > 0 {
		// CDS and LDS are in: the EDS and RDS wait, bounded by the initial fetch timeout,
		// starts now.
		if c.primaryApplied() && c.fetchTimer == nil && !c.fetchExpired && c.b.InitialFetchTimeout > 0 {
			c.fetchTimer = time.NewTimer(c.b.InitialFetchTimeout)
		}
		return
	}
	c.ready = true
	c.stopFetchTimer()
	c.log.Info("xds: first full config applied", zap.Int("clusters", len(c.clusters)), zap.Int("listeners", len(c.listeners)))
	c.releaseReady()
}

// primaryApplied reports whether the subscribed wildcard types (CDS, LDS) were applied.
func (c *Client) primaryApplied() bool {
	for _, url := range []string{ClusterType, ListenerType} {
		if ts := c.types[url]; ts != nil && !ts.applied {
			return false
		}
	}
	return true
}

// missing lists what the first full set still lacks. CDS and LDS are always waited for;
// EDS and RDS until the initial fetch timeout.
func (c *Client) missing() []string {
	var out []string
	for _, url := range []string{ClusterType, ListenerType} {
		if ts := c.types[url]; ts != nil && !ts.applied {
			out = append(out, shortType(url))
		}
	}
	if len(out) > 0 || c.fetchExpired {
		return out
	}
	if eds := c.types[EndpointType]; eds != nil {
		for _, n := range eds.names {
			if _, ok := c.assignments[n]; !ok {
				out = append(out, "EDS "+n)
			}
		}
	}
	if rds := c.types[RouteType]; rds != nil {
		for _, n := range rds.names {
			if _, ok := c.rds[n]; !ok {
				out = append(out, "RDS "+n)
			}
		}
	}
	return out
}

// expireFetch stops waiting for EDS and RDS resources for readiness.
func (c *Client) expireFetch() {
	if c.ready {
		return
	}
	c.log.Warn("xds: initial fetch timeout; readiness no longer waits for missing EDS/RDS resources",
		zap.String("missing", strings.Join(c.missing(), ", ")))
	c.fetchExpired = true
	c.fetchTimer = nil
	c.checkReady()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
