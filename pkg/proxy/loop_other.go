//go:build !linux

package proxy

import "github.com/mosnlite/mosnlite/pkg/network"

// LoopCapable reports false: event loops need Linux.
func (p *Proxy) LoopCapable() bool { return false }

// ServeRaw implements network.RawHandler; it declines every socket here.
func (p *Proxy) ServeRaw(network.Accepted) bool { return false }

func (p *Proxy) closeLoopPools() {}
