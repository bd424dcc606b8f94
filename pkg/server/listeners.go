package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/network"
)

// liveListener is one listener the server runs: its config, socket and filter.
type liveListener struct {
	owner  string
	cfg    *config.Listener // defaulted; never modified (the filter keeps a pointer to it)
	canon  []byte           // canonical JSON of cfg: equal bytes = unchanged listener
	ln     *network.Listener
	closer io.Closer // the filter, when it holds resources of its own

	// Set while Run serves it (s.mu held to write).
	cancel context.CancelFunc
	served chan struct{} // closed when Serve returned
}

// canonical is the listener config's canonical JSON (encoding/json: fields in declaration
// order, raw filter configs compacted).
func canonical(lc *config.Listener) []byte {
	b, err := json.Marshal(lc)
	if err != nil {
		// Every field marshals; a raw config that does not would never have parsed.
		return []byte(fmt.Sprintf("unmarshalable:%p", lc))
	}
	return b
}

// addrKey names the socket (or virtual address) a listener owns, for spotting a listener
// that takes over an address another one releases in the same change. "" for listeners
// on an ephemeral port, which never collide.
func addrKey(lc *config.Listener) string {
	netw := networkOf(lc)
	if netw != config.NetworkUnix {
		if _, port, err := net.SplitHostPort(lc.Address); err == nil && port == "0" && lc.BindsPort() {
			return ""
		}
	}
	virtual := ""
	if !lc.BindsPort() {
		virtual = "virtual|"
	}
	return virtual + netw + "|" + strings.ToLower(lc.Address)
}

// withDefaults returns a defaulted copy of lc, so a config that spells a default out
// equals one that omits it.
func withDefaults(lc *config.Listener) *config.Listener {
	dc := config.Config{Servers: []config.Server{{Listeners: []config.Listener{*lc}}}}
	dc.ApplyDefaults()
	return &dc.Servers[0].Listeners[0]
}

// handOver reports whether the changed listener lc can take over old's socket: both bind
// the same tcp address with the same socket options.
func handOver(old *liveListener, lc *config.Listener) bool {
	o := old.cfg
	return old.ln.Addr() != nil && strings.HasPrefix(networkOf(lc), "tcp") && networkOf(o) == networkOf(lc) &&
		o.BindsPort() && lc.BindsPort() && o.Address == lc.Address && o.ReusePort == lc.ReusePort
}

func networkOf(lc *config.Listener) string {
	if lc.Network == "" {
		return config.DefaultNetwork
	}
	return lc.Network
}

// buildFilter builds the listener's terminal network filter and the network listener
// config around it; it opens no socket.
func (s *Server) buildFilter(lc *config.Listener, ext *extension.Set) (network.ListenerConfig, any, error) {
	var lcfg network.ListenerConfig
	if len(lc.FilterChains) == 0 {
		return lcfg, nil, errors.New("filter_chains: none")
	}
	// filter_chain_match is not supported: chain 0 serves every connection, and
	// validation warns about the others.
	fc := lc.FilterChains[0]
	if len(fc.Filters) != 1 {
		return lcfg, nil, fmt.Errorf("filter_chains[0].filters: want exactly one terminal filter, have %d", len(fc.Filters))
	}
	fcfg := fc.Filters[0]
	netw := lc.Network
	if netw == "" {
		netw = "tcp"
	}
	od := lc.UseOriginalDst
	for _, lf := range lc.ListenerFilters {
		if lf.Type != "original_dst" {
			return lcfg, nil, fmt.Errorf("listener_filters: %q is not available in this build", lf.Type)
		}
		var oc config.OriginalDstFilterConfig
		if len(lf.Config) > 0 {
			if err := config.Unmarshal(lf.Config, &oc); err != nil {
				return lcfg, nil, fmt.Errorf("listener_filters: original_dst: %w", err)
			}
		}
		if od == config.OriginalDstOff {
			od = config.OriginalDst(oc.Type)
			if od == config.OriginalDstOff {
				od = config.OriginalDstRedirect
			}
		}
	}
	factory, err := ext.NetworkFilters.Get(fcfg.Type)
	if err != nil {
		return lcfg, nil, fmt.Errorf("filter_chains[0].filters[0].type: %w (not available in this build)", err)
	}
	lg := s.log.Named("listener").With(zap.String(log.FieldListener, lc.Name))
	nf, err := factory(fcfg.Config, filter.Deps{
		Clusters: s.clusters,
		Pool:     s.pool,
		Metrics:  s.metrics,
		Log:      lg,
		Listener: lc,
		Routers:  s.routers,

		StreamFilters: ext.StreamFilters,
		Codecs:        ext.Codecs,
		Overloaded:    s.overloaded(),
	})
	if err != nil {
		return lcfg, nil, fmt.Errorf("filter_chains[0].filters[0].config: %w", err)
	}
	idle := lc.ConnectionIdleTimeout.Or(config.DefaultConnectionIdleTimeout)
	if fcfg.Type != "proxy" {
		// L4 filters keep their own idle timers (tcp_proxy/udp_proxy idle_timeout) and bypass
		// the connection's read loop, so the connection-level timer would misfire.
		idle = 0
	}
	lcfg = network.ListenerConfig{
		Name:           lc.Name,
		Network:        netw,
		Address:        lc.Address,
		BindPort:       lc.BindsPort(),
		ReusePort:      lc.ReusePort,
		MaxConnections: lc.MaxConnections,
		OriginalDst:    od,
		Conn: network.ConnOptions{
			Pool:        s.pool,
			IdleTimeout: idle,
			BufferLimit: int(lc.PerConnBufferLimitBytes),
			Log:         lg,
		},
		Index:   s.index,
		Metrics: s.metrics,
		Log:     lg,
	}
	lcfg.Overloaded = s.overloaded()
	if strings.HasPrefix(netw, "tcp") {
		lcfg.SendTimeout = lc.SendTimeout.Or(config.DefaultSendTimeout)
	}
	switch netw {
	case "udp", "udp4", "udp6":
		ph, ok := nf.(network.PacketHandler)
		if !ok {
			closeFilter(nf)
			return lcfg, nil, fmt.Errorf("filter %q cannot serve a udp listener", fcfg.Type)
		}
		lcfg.PacketHandler = ph
	default:
		h, ok := nf.(network.Handler)
		if !ok {
			closeFilter(nf)
			return lcfg, nil, fmt.Errorf("filter %q cannot serve a %s listener", fcfg.Type, netw)
		}
		lcfg.Handler = h
		if rh, ok := nf.(network.RawHandler); ok && netw != "unix" {
			lcfg.RawHandler = rh
			lcfg.Loops = s.eventLoops()
		}
	}
	// TLS termination (pkg/network/tls.go); the ALPN list comes from the filter when the
	// config names none.
	np, _ := nf.(network.NextProtoser)
	var next []string
	if np != nil {
		next = np.NextProtos()
	}
	if lcfg.TLS, err = network.ServerTLSConfig(fc.TLSContext, fc.TLSContexts, next, lg); err != nil {
		closeFilter(nf)
		return lcfg, nil, fmt.Errorf("filter_chains[0].%w", err)
	}
	if lcfg.TLS != nil && lcfg.PacketHandler != nil {
		closeFilter(nf)
		return lcfg, nil, fmt.Errorf("filter_chains[0].tls_context: a %s listener cannot terminate TLS", netw)
	}
	return lcfg, nf, nil
}

func closeFilter(nf any) {
	if c, ok := nf.(io.Closer); ok {
		_ = c.Close()
	}
}

// pending is a listener built by planListeners but not yet serving.
type pending struct {
	ll   *liveListener
	lcfg network.ListenerConfig
	// deferred: the address is held by a listener this change replaces or removes, so the
	// socket is bound at commit, after the old one stops accepting.
	deferred bool
}

// listenerPlan is a prepared SetListeners: everything that can fail has been done, except
// binding the deferred sockets.
type listenerPlan struct {
	owner   string
	keep    []*liveListener // unchanged (same config): sockets and connections stay
	build   []*pending      // new or changed
	retire  []*liveListener // removed or replaced
	ordered []string        // the owner's listener names, in config order
}

// discard undoes a plan that will not be committed: sockets and filters are closed.
func (p *listenerPlan) discard() {
	for _, b := range p.build {
		if b.ll.ln != nil {
			b.ll.ln.Close()
		}
		if b.ll.closer != nil {
			_ = b.ll.closer.Close()
		}
	}
}

// planListeners builds the owner's new listener set ls (defaulted; the plan keeps
// pointers into fresh copies). path names the config list in errors ("servers[0].listeners").
// On error nothing is left open. s.mu is held.
func (s *Server) planListeners(owner string, ls []config.Listener, path string) (_ *listenerPlan, err error) {
	p := &listenerPlan{owner: owner}
	defer func() {
		if err != nil {
			p.discard()
			for _, b := range p.build { // their filters made series for listeners that never served
				if s.live[b.ll.cfg.Name] == nil {
					s.metrics.DeleteListener(b.ll.cfg.Name)
				}
			}
		}
	}()
	old := map[string]*liveListener{}
	for name, ll := range s.live {
		if ll.owner == owner {
			old[name] = ll
		}
	}
	// Clashes with other owners' names and virtual addresses.
	names := map[string]bool{}
	others := map[string]string{} // virtual address key → listener name
	for name, ll := range s.live {
		if ll.owner != owner && !ll.cfg.BindsPort() {
			others[addrKey(ll.cfg)] = name
		}
	}
	for i := range ls {
		lc := &ls[i]
		if o, ok := s.live[lc.Name]; ok && o.owner != owner {
			return nil, fmt.Errorf("%s[%d]: listener %q is already defined by %s; names are unique across owners", path, i, lc.Name, o.owner)
		}
		if names[lc.Name] {
			return nil, fmt.Errorf("%s[%d]: duplicate listener name %q", path, i, lc.Name)
		}
		names[lc.Name] = true
		if !lc.BindsPort() {
			if other, ok := others[addrKey(lc)]; ok {
				return nil, fmt.Errorf("%s[%d] (%s): address %q is also the address of virtual listener %q (%s)", path, i, lc.Name, lc.Address, other, s.live[other].owner)
			}
		}
	}
	// Addresses released by this change: listeners removed or changed.
	released := map[string]bool{}
	changed := map[string]bool{}
	for i := range ls {
		lc := &ls[i]
		if o, ok := old[lc.Name]; ok && string(o.canon) == string(canonical(withDefaults(lc))) {
			continue
		}
		changed[lc.Name] = true
	}
	for name, o := range old {
		if !names[name] || changed[name] {
			if k := addrKey(o.cfg); k != "" {
				released[k] = true
			}
			// One on an ephemeral port is released under the port it got, which a new
			// config may now name.
			if a := o.ln.Addr(); a != nil && o.cfg.BindsPort() {
				released[networkOf(o.cfg)+"|"+strings.ToLower(a.String())] = true
			}
		}
	}
	for i := range ls {
		lc := withDefaults(&ls[i])
		p.ordered = append(p.ordered, lc.Name)
		canon := canonical(lc)
		if o, ok := old[lc.Name]; ok && !changed[lc.Name] {
			p.keep = append(p.keep, o)
			continue
		}
		lcfg, nf, err := s.buildFilter(lc, s.ext)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] (%s): %w", path, i, lc.Name, err)
		}
		ll := &liveListener{owner: owner, cfg: lc, canon: canon}
		if c, ok := nf.(io.Closer); ok {
			ll.closer = c
		}
		b := &pending{ll: ll, lcfg: lcfg, deferred: released[addrKey(lc)] && addrKey(lc) != ""}
		p.build = append(p.build, b)
		if o, ok := old[lc.Name]; ok && handOver(o, lc) {
			// Same tcp socket settings: the new listener takes over the old one's socket,
			// so no connection is refused while the listener changes.
			f, err := o.ln.File()
			if err == nil {
				b.lcfg.Inherit, b.deferred = f, false
			} else {
				s.log.Warn("cannot hand the socket over; rebinding", zap.String(log.FieldListener, lc.Name), zap.Error(err))
			}
		}
		if !b.deferred {
			if ll.ln, err = network.NewListener(b.lcfg); err != nil {
				if b.lcfg.Inherit != nil {
					b.lcfg.Inherit.Close() // already closed when the bind got that far
				}
				return nil, fmt.Errorf("%s[%d] (%s): %w", path, i, lc.Name, err)
			}
		}
	}
	for name, o := range old {
		if !names[name] || changed[name] {
			p.retire = append(p.retire, o)
		}
	}
	return p, nil
}

// commitListeners swaps a plan in: retired listeners stop accepting and drain in the
// background, deferred sockets are bound, new listeners start serving when Run runs. The
// error reports deferred sockets that could not be bound (that listener is then down);
// everything else has been applied. s.mu is held.
func (s *Server) commitListeners(p *listenerPlan) error {
	var gone []string // names whose series go unless a listener of that name now serves
	for _, ll := range p.retire {
		s.retire(ll)
		gone = append(gone, ll.cfg.Name)
	}
	var errs []error
	for _, b := range p.build {
		ll := b.ll
		if b.deferred {
			ln, err := network.NewListener(b.lcfg)
			if err != nil {
				s.log.Error("listener could not take over its address; it is down", zap.String(log.FieldListener, ll.cfg.Name), zap.Error(err))
				errs = append(errs, fmt.Errorf("listener %q: rebind %s: %w", ll.cfg.Name, ll.cfg.Address, err))
				if ll.closer != nil {
					_ = ll.closer.Close()
				}
				gone = append(gone, ll.cfg.Name)
				continue
			}
			ll.ln = ln
		}
		if err := s.index.Add(ll.ln); err != nil {
			s.log.Warn("listener not indexed for original_dst hand-off", zap.String(log.FieldListener, ll.cfg.Name), zap.Error(err))
		}
		s.live[ll.cfg.Name] = ll
		if s.run != nil {
			s.startServing(ll)
		}
		s.log.Info("listener started", zap.String(log.FieldListener, ll.cfg.Name), zap.String("owner", ll.owner),
			zap.Stringer("address", addrStringer{ll.ln.Addr(), ll.cfg.Address}))
	}
	s.order[p.owner] = p.ordered
	for _, name := range gone {
		if s.live[name] == nil {
			s.metrics.DeleteListener(name)
		}
	}
	return errors.Join(errs...)
}

type addrStringer struct {
	a   net.Addr
	cfg string
}

func (a addrStringer) String() string {
	if a.a == nil {
		return a.cfg + " (virtual)"
	}
	return a.a.String()
}

// retire removes ll: it stops accepting now; its connections drain (up to the drain
// timeout) in the background, then its filter is closed. s.mu is held.
func (s *Server) retire(ll *liveListener) {
	if s.live[ll.cfg.Name] == ll {
		delete(s.live, ll.cfg.Name)
	}
	s.index.Remove(ll.ln)
	ll.ln.Close()
	s.log.Info("listener removed; draining", zap.String(log.FieldListener, ll.cfg.Name), zap.String("owner", ll.owner))
	if ll.cancel == nil { // never served: no connection to wait for
		if ll.closer != nil {
			_ = ll.closer.Close()
		}
		return
	}
	ll.cancel()
	goAwayFilters([]*liveListener{ll})
	timeout := s.drainTimeout()
	s.drains.Add(1)
	go func() {
		defer s.drains.Done()
		<-ll.served
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		ll.ln.Drain(ctx)
		if ll.closer != nil {
			_ = ll.closer.Close()
		}
		// Its series went when it was removed; a connection's last update may have made
		// one again since (a lookup per event). Delete again unless the name serves anew.
		s.mu.Lock()
		if s.live[ll.cfg.Name] == nil {
			s.metrics.DeleteListener(ll.cfg.Name)
		}
		s.mu.Unlock()
		s.log.Info("listener drained", zap.String(log.FieldListener, ll.cfg.Name))
	}()
}

// startServing runs ll's Serve under Run's serving context. s.mu is held; s.run is set.
func (s *Server) startServing(ll *liveListener) {
	ctx, cancel := context.WithCancel(s.run.ctx)
	ll.cancel = cancel
	ll.served = make(chan struct{})
	r := s.run
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(ll.served)
		if err := ll.ln.Serve(ctx); err != nil {
			select {
			case r.failed <- err:
			default:
			}
		}
	}()
}
