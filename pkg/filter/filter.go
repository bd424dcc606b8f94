// Package filter holds the contracts between the server and network filters. A factory runs
// once per config generation and returns a filter; the filter then serves every connection
// (or, for UDP, the listener's packet socket) accepted by the listener it was built for.
package filter

import (
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// Deps is what a network filter factory may use. It is built by pkg/server.
type Deps struct {
	Clusters *cluster.Manager
	Pool     *buffer.Pool
	Metrics  *metrics.Set
	Log      *zap.Logger
	Listener *config.Listener // the listener the filter is built for
	Routers  *router.Tables   // route tables by router_config_name (the proxy filter reads them per request)
	// StreamFilters is the stream filter registry (extension.Set.StreamFilters); the proxy
	// filter builds the listener's stream_filters from it.
	StreamFilters StreamRegistry
	// Codecs is the xprotocol codec registry (extension.Set.Codecs); the proxy filter takes
	// the codec for a bolt, boltv2 or dubbo listener from it.
	Codecs CodecRegistry
	// Overloaded, when set, reports memory near its limit (overload.Memory): the proxy
	// then refuses new requests (503, or the RPC codec's server-busy status).
	Overloaded func() bool
}

// CodecRegistry looks RPC codecs up by protocol name (extension.Set.Codecs).
type CodecRegistry interface {
	Get(name string) (xprotocol.CodecFactory, error)
}

// NetworkFactory decodes a filter's raw config and builds the filter. A bad config is an
// error that names the field; it is returned before any socket is opened.
type NetworkFactory func(raw config.RawMessage, d Deps) (NetworkFilter, error)

// NetworkFilter is a terminal network filter. It implements network.Handler for stream
// listeners (tcp, unix) and/or network.PacketHandler for udp listeners; the server checks
// which one the listener needs.
type NetworkFilter any
