package stream

import (
	"context"

	"github.com/mosnlite/mosnlite/pkg/network"
)

// ServerConnection serves the downstream connections of one protocol on one listener:
// each accepted connection's streams are decoded, proxied and answered by it. A
// registration's Factory builds one per listener and protocol.
type ServerConnection interface {
	// ServeConn serves c until it closes (network.Handler).
	ServeConn(ctx context.Context, c *network.Conn)
	// Protocol is the downstream protocol served.
	Protocol() Protocol
	// GoAway starts a graceful drain and returns at once: clients are told to open no
	// new streams where the protocol can say so (HTTP/2 GOAWAY, bolt go-away, dubbo's
	// readonly event), and connections close once their streams are answered.
	GoAway()
	// Close drains (GoAway, then a bounded wait for the streams in flight) and releases
	// what the server holds: upstream connections, access logs.
	Close() error
}

// ClientConnection is one upstream connection carrying the streams of one protocol: a
// single request at a time (PingPong) or many, matched by id (Multiplex).
type ClientConnection interface {
	// Protocol is the upstream protocol spoken.
	Protocol() Protocol
	// ActiveStreams is the number of requests waiting for their response on it.
	ActiveStreams() int
	// Available reports whether a new stream may be started on it: it is neither
	// closed nor draining.
	Available() bool
	// GoAway stops new streams on the connection; it closes once the active ones end.
	GoAway()
	// Close closes the connection; streams still active are answered as reset.
	Close() error
}
