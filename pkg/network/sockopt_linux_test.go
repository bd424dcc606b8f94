package network

import (
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// TestTProxyNeedsPrivilege drops CAP_NET_ADMIN and CAP_NET_RAW from one OS thread and binds
// a tproxy listener on it: the error must say what is missing.
func TestTProxyNeedsPrivilege(t *testing.T) {
	t.Parallel()
	errc := make(chan error, 1)
	go func() {
		// The thread keeps the reduced capabilities; it is never unlocked, so the runtime
		// discards it when this goroutine exits.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		for _, c := range []uint{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		cfg := testConfig(t, "tproxy", echo(buffer.NewPool()))
		cfg.OriginalDst = "tproxy"
		l, err := NewListener(cfg)
		if err == nil {
			l.Close()
		}
		errc <- err
	}()
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "IP_TRANSPARENT") || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("tproxy listener without privilege: %v; want an IP_TRANSPARENT error naming CAP_NET_ADMIN", err)
	}
	t.Log(err)
}
