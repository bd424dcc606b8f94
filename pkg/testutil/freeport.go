package testutil

import (
	"net"
	"sync"
	"testing"
)

// handedOut holds the ports FreeAddr has returned in this process. The kernel may give a
// just-closed port to the next bind, so without it two calls in a row could return the
// same address and a test would configure two listeners (or a dead and a live host) on one
// port.
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

// FreeAddr returns a loopback TCP address ("127.0.0.1:N") that was free a moment ago and
// that no earlier call in this process has returned. Nothing holds it: the caller's
// process (or a child it starts) is expected to bind it soon.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeAddr(t, "tcp", func() (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	})
}

// FreeUDPAddr is FreeAddr for UDP.
func FreeUDPAddr(t testing.TB) string {
	t.Helper()
	return freeAddr(t, "udp", func() (string, error) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer pc.Close()
		return pc.LocalAddr().String(), nil
	})
}

func freeAddr(t testing.TB, network string, bind func() (string, error)) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[string]bool)
	}
	for range 100 {
		a, err := bind()
		if err != nil {
			t.Fatal(err)
		}
		if key := network + " " + a; !handedOut.ports[key] {
			handedOut.ports[key] = true
			return a
		}
	}
	t.Fatal("no loopback port left that was not handed out before")
	return ""
}
