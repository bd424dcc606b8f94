package cluster

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// canDialNoPort: this system can bind a dialling socket to the wildcard address without
// reserving a port (IP_BIND_ADDRESS_NO_PORT, Linux 4.2+), so net.Dialer.DialTCP with a
// zero local address costs no bind-time port search.
const canDialNoPort = true

// bindNoPort is the fast dialer's Control: the bind that follows leaves the port to
// connect, as for an unbound socket. On a kernel without the option the bind picks a port
// itself: slower, same result.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}
