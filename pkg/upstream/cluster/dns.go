package cluster

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"
)

const (
	// maxDNSBackoff caps the retry interval after failed lookups (unless dns_refresh_rate
	// is longer: a failure never makes lookups rarer than success does).
	maxDNSBackoff = time.Minute
	// lookupTimeout bounds one lookup, in case a Resolver ignores its own timeouts.
	lookupTimeout = 30 * time.Second
)

// refresher resolves a STRICT_DNS cluster's names. Each configured name is looked up
// every dns_refresh_rate. A failed lookup (including NXDOMAIN) keeps that name's last good
// addresses, counts dns_resolve_failures_total and backs the whole cluster's next round
// off: the interval doubles per consecutive failing round, with jitter (uniform in
// [d/2, d]), up to one minute. A successful answer with no addresses is taken as given:
// the name then contributes no hosts (envoy#2691 behaviour for an authoritative empty
// answer), which, if no other name has hosts, makes picks wait and fail.
type refresher struct {
	c   *Cluster
	gen uint64
	set *settings
}

func (r *refresher) run(ctx context.Context) {
	failures := 0
	for {
		ok := r.round(ctx)
		if ctx.Err() != nil {
			return
		}
		delay := r.set.dnsRate
		if ok {
			failures = 0
		} else {
			failures++
			delay = backoff(r.set.dnsRate, failures, r.c.m.o.Rand)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff returns the jittered delay after n consecutive failing rounds.
func backoff(rate time.Duration, n int, rnd func() uint64) time.Duration {
	ceiling := max(maxDNSBackoff, rate)
	d := rate
	for range n {
		if d >= ceiling/2 {
			d = ceiling
			break
		}
		d *= 2
	}
	half := d / 2
	return half + time.Duration(rnd()%uint64(half+1))
}

// round resolves every name once and publishes the answers; it reports whether every
// lookup succeeded.
func (r *refresher) round(ctx context.Context) bool {
	c := r.c
	answers := map[string][]netip.Addr{}
	ok := true
	for i := range r.set.hosts {
		spec := &r.set.hosts[i]
		if spec.ip.IsValid() {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		addrs, err := c.m.o.Resolver.LookupNetIP(lctx, r.set.dnsNetwork, spec.host)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			ok = false
			c.dnsFail.Inc()
			c.log.Warn("dns lookup failed; keeping the last good hosts", zap.String("name", spec.host), zap.Error(err))
			continue
		}
		answers[spec.addr] = normalize(addrs, r.set.dnsNetwork)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dnsGen != r.gen || c.removed {
		return ok // superseded while looking up: drop the answers
	}
	changed := false
	for k, v := range answers {
		if old, had := c.dns[k]; !had || !slices.Equal(old, v) {
			c.dns[k] = v
			changed = true
		}
	}
	if changed {
		c.rebuildLocked()
		c.log.Debug("dns hosts updated", zap.Int("hosts", len(c.snap.Load().hosts)))
	}
	return ok
}

// normalize unmaps IPv4-in-IPv6, keeps the requested family, sorts and dedupes, so an
// answer in another order is no change.
func normalize(addrs []netip.Addr, network string) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid():
			continue
		case network == "ip4" && !a.Is4(), network == "ip6" && !a.Is6():
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
