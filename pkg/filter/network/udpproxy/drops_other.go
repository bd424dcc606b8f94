//go:build !linux

package udpproxy

import "net"

// socketDrops is unknown here.
func socketDrops(*net.UDPConn) (uint64, bool) { return 0, false }
