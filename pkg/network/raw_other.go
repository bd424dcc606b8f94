//go:build !linux

package network

import (
	"context"
	"net/netip"

	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

// acceptor is a listener's registration on an event loop; there are none here.
type acceptor struct{}

// rawOK: event loops need Linux; listeners serve on goroutines.
func (l *Listener) rawOK() bool { return false }

func (l *Listener) serveRaw(context.Context) error { return nil }

func (l *Listener) stopRaw() {}

func (l *Listener) rawFreed(*evloop.Loop) {}

func closeFD(int, bool) {}

func SockName(int) netip.AddrPort { return netip.AddrPort{} }

func (l *Listener) serveFallback(int, []byte) {}
