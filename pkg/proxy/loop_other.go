//go:build !linux

package proxy

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
)

// LoopCapable reports false: event loops need Linux.
func (p *Proxy) LoopCapable() bool { return false }

// ServeRaw implements network.RawHandler; it declines every socket here.
func (p *Proxy) ServeRaw(network.Accepted) bool { return false }

// ServeRawSniff declines every socket here.
func (p *Proxy) ServeRawSniff(network.Accepted, func([]byte) (bool, bool), time.Duration) bool {
	return false
}

func (p *Proxy) closeLoopPools() {}
