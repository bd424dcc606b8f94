package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Netfilter's getsockopt names for the pre-NAT destination (linux/netfilter_ipv4.h,
// linux/netfilter_ipv6/ip6_tables.h): both are 80, at SOL_IP and SOL_IPV6.
const (
	soOriginalDst     = 80
	ip6tSoOriginalDst = 80
)

// control sets socket options before bind: SO_REUSEPORT, and IP(V6)_TRANSPARENT for
// tproxy listeners.
func (l *Listener) control(network, _ string, rc syscall.RawConn) error {
	reuse := l.cfg.ReusePort && l.network != "unix"
	tproxy := l.cfg.OriginalDst == config.OriginalDstTProxy
	// A listener that may accept on event loops sets TCP_NODELAY before it listens: every
	// accepted socket inherits it (Linux clones the listener's socket state), which saves a
	// setsockopt per connection (raw_linux.go).
	noDelay := l.isTCP() && l.cfg.RawHandler != nil && l.cfg.Loops != nil
	if !reuse && !tproxy && !noDelay {
		return nil
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		if noDelay {
			l.listenNoDelay = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) == nil
		}
		if reuse {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				serr = fmt.Errorf("set SO_REUSEPORT: %w", err)
				return
			}
		}
		if tproxy {
			level, opt, name := unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
			if network == "tcp6" {
				level, opt, name = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
			}
			if err := unix.SetsockoptInt(int(fd), level, opt, 1); err != nil {
				serr = fmt.Errorf("use_original_dst tproxy: set %s: %w", name, err)
				if errors.Is(err, unix.EPERM) {
					serr = fmt.Errorf("%w (tproxy needs CAP_NET_ADMIN)", serr)
				}
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// setSendTimeout sets TCP_USER_TIMEOUT (whole milliseconds; 0 turns it off) on a tcp
// socket: on a listening one, every socket it accepts inherits it.
func setSendTimeout(s any, d time.Duration) error {
	sc, ok := s.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("send_timeout: set TCP_USER_TIMEOUT: %w", serr)
	}
	return nil
}

// GetOriginalDst returns the destination a connection had before an iptables REDIRECT
// (or DNAT): SO_ORIGINAL_DST for IPv4 (including IPv4-mapped addresses on a dual-stack
// socket), IP6T_SO_ORIGINAL_DST for IPv6. It fails when conntrack has no NAT entry for
// the connection.
func GetOriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v4 := true
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		v4 = false
	}
	var (
		ap   netip.AddrPort
		serr error
	)
	if err := rc.Control(func(fd uintptr) { ap, serr = getOriginalDst(fd, v4) }); err != nil {
		return netip.AddrPort{}, err
	}
	return ap, serr
}

func getOriginalDst(fd uintptr, v4 bool) (netip.AddrPort, error) {
	if v4 {
		var sa unix.RawSockaddrInet4
		n := uint32(unix.SizeofSockaddrInet4)
		if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &n); err != nil {
			return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
		}
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), portOf(&sa.Port)), nil
	}
	var sa unix.RawSockaddrInet6
	n := uint32(unix.SizeofSockaddrInet6)
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), &n); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
	}
	return normalize(netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), portOf(&sa.Port))), nil
}

// portOf reads a sockaddr port, which is stored in network byte order.
func portOf(p *uint16) uint16 { return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:]) }

func getsockopt(fd uintptr, level, opt int, val unsafe.Pointer, n *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt), uintptr(val),
		uintptr(unsafe.Pointer(n)), 0)
	if e != 0 {
		return e
	}
	return nil
}
