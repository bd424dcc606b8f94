package extension

import (
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Set is every registry the server consults. Fill it with builtin.Register (or a test's own
// list) before server.New; it is read-only afterwards.
type Set struct {
	NetworkFilters *Registry[filter.NetworkFactory]
	StreamFilters  *Registry[filter.StreamFactory]
	LoadBalancers  *Registry[lb.Factory]
	// Codecs are the RPC (xprotocol) codecs by protocol name: bolt, boltv2, dubbo.
	Codecs *Registry[xprotocol.CodecFactory]
}

// NewSet returns empty registries.
func NewSet() *Set {
	return &Set{
		NetworkFilters: NewRegistry[filter.NetworkFactory]("network filter"),
		StreamFilters:  NewRegistry[filter.StreamFactory]("stream filter"),
		LoadBalancers:  NewRegistry[lb.Factory]("load balancer"),
		Codecs:         NewRegistry[xprotocol.CodecFactory]("xprotocol codec"),
	}
}
