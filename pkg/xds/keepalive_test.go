package xds

import (
	"time"
	_ "unsafe" // go:linkname
)

// grpc-go raises a client keepalive interval under 10s to 10s (gRPC A8; grpc-go's own tests
// lower that floor the same way). The tests that black-hole the control plane use
// sub-second keepalive settings so that they finish in a few seconds; in production the
// floor stays.
//
//go:linkname grpcKeepaliveMinPingTime google.golang.org/grpc/internal.KeepaliveMinPingTime
var grpcKeepaliveMinPingTime time.Duration

func init() { grpcKeepaliveMinPingTime = 100 * time.Millisecond }
