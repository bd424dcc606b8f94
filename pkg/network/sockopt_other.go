//go:build !linux

package network

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

var errNotLinux = errors.New("network: original_dst and reuse_port need Linux")

func (l *Listener) control(_, _ string, _ syscall.RawConn) error {
	if l.cfg.ReusePort || l.cfg.OriginalDst == config.OriginalDstTProxy {
		return errNotLinux
	}
	return nil
}

// setSendTimeout does nothing here: TCP_USER_TIMEOUT is Linux's.
func setSendTimeout(any, time.Duration) error { return nil }

// GetOriginalDst is only available on Linux.
func GetOriginalDst(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errNotLinux }
