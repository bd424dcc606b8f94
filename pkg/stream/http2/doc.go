// Package http2 holds mosnlite's HTTP/2 stream layer.
//
// The server side (server.go, frame.go) is a frame engine of its own that runs on the
// downstream connection's goroutine: it reads frames out of the connection's pooled read
// buffer, decodes header blocks with golang.org/x/net/http2/hpack, keeps the stream
// states and both directions of flow control (RFC 9113), and hands each decoded request
// to a Handler. Handlers write from any goroutine; frames gather in one per-connection
// buffer under one per-connection mutex and reach the socket through the network.Conn
// write queue in writev batches, so several streams' responses leave in one system call
// and no goroutine or channel hand-off stands between a handler and the socket. x/net's
// http2.Server was used before; its goroutine and channel hand-offs per stream and one
// write per frame cost three times nginx's CPU per request (docs/benchmarks.md).
//
// The client side is golang.org/x/net/http2's ClientConn as published, pooled per host
// (pool.go). request.go has the router view over a net/http request and the hop-by-hop
// rules used when requests and responses cross between HTTP/1 and HTTP/2.
package http2
