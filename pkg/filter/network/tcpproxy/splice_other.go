//go:build !linux

package tcpproxy

import (
	"net"
	"syscall"
)

// Without splice(2) every burst is a plain read and write.
func (h *half) setupSplice() {}
func (h *half) queued() int  { return 0 }

func peerReset(net.Conn) bool { return false }

func inputQueued(syscall.RawConn) bool { return false }
