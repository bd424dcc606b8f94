//go:build !unix

package connpool

import "syscall"

// peekIdle cannot peek at a socket here: the connection is assumed alive, and a
// connection the peer closed fails its first write or read, as without a probe.
func peekIdle(syscall.RawConn) bool { return true }
