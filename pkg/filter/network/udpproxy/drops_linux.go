package udpproxy

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketDrops returns how many datagrams the kernel dropped on c's socket so far (its
// receive buffer was full, mostly), from SO_MEMINFO: the drops column of /proc/net/udp.
func socketDrops(c *net.UDPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var (
		info [unix.SK_MEMINFO_VARS]uint32
		ok   bool
	)
	if rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(info))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
		ok = e == 0 && l > unix.SK_MEMINFO_DROPS*4
	}) != nil || !ok {
		return 0, false
	}
	return uint64(info[unix.SK_MEMINFO_DROPS]), true
}
