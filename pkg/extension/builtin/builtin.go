// Package builtin is the one explicit list of mosnlite's built-in extensions.
package builtin

import (
	"errors"

	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/filter/network/proxy"
	"github.com/mosnlite/mosnlite/pkg/filter/network/tcpproxy"
	"github.com/mosnlite/mosnlite/pkg/filter/network/udpproxy"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/fault"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/headermutation"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/ipaccess"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/payloadlimit"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Register fills s with every built-in extension.
func Register(s *extension.Set) error {
	errs := []error{
		s.NetworkFilters.Register(proxy.Name, proxy.Factory),
		s.NetworkFilters.Register(tcpproxy.Name, tcpproxy.Factory),
		s.NetworkFilters.Register(udpproxy.Name, udpproxy.Factory),
		s.StreamFilters.Register(fault.Name, fault.Factory),
		s.StreamFilters.Register(payloadlimit.Name, payloadlimit.Factory),
		s.StreamFilters.Register(ipaccess.Name, ipaccess.Factory),
		s.StreamFilters.Register(headermutation.Name, headermutation.Factory),
		s.Codecs.Register(string(stream.Bolt), func() xprotocol.Codec { return bolt.New(bolt.Options{}) }),
		s.Codecs.Register(string(stream.BoltV2), func() xprotocol.Codec { return bolt.NewV2(bolt.Options{}) }),
		s.Codecs.Register(string(stream.Dubbo), func() xprotocol.Codec { return dubbo.New(dubbo.Options{}) }),
	}
	for _, n := range lb.Builtins() {
		errs = append(errs, s.LoadBalancers.Register(n.Name, n.Factory))
	}
	return errors.Join(errs...)
}

// NewSet returns a Set with every built-in registered.
func NewSet() (*extension.Set, error) {
	s := extension.NewSet()
	return s, Register(s)
}
