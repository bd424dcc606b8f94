package proxy

import (
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// newXProtocol serves bolt, bolt v2 and dubbo downstream connections. Not in this build yet.
func newXProtocol(p Params, down stream.Protocol) (network.Handler, error) {
	return nil, errNotBuilt
}
