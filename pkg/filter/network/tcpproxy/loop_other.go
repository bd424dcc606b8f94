//go:build !linux

package tcpproxy

import "github.com/mosnlite/mosnlite/pkg/network"

// ServeRaw declines every socket: event loops need Linux, so ServeConn serves them all.
func (f *Filter) ServeRaw(network.Accepted) bool { return false }
