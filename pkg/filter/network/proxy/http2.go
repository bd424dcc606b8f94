package proxy

import (
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// newHTTP2 serves HTTP/2 downstream connections. Not in this build yet.
func newHTTP2(p Params, _ stream.Protocol) (network.Handler, error) {
	return nil, errNotBuilt
}
