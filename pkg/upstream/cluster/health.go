package cluster

import (
	"context"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/upstream/healthcheck"
)

// Active health checks: while Manager.Run runs, a cluster with a health_check runs one
// checker goroutine per host (healthcheck.Checker.Run), owned by Run's WaitGroup. The set
// of checkers follows the hosts: every rebuild (config update, DNS answer, health change)
// starts checkers for new hosts and stops those of hosts that left; a changed health_check
// restarts them all (keeping each host's verdict); removing the cluster or ending Run's ctx
// stops them. A checker's verdict is the downActive reason of its host.

// hostCheck is one running checker.
type hostCheck struct {
	hc     *healthcheck.Checker
	st     *hostState
	cancel context.CancelFunc
}

// attach gives c Manager.Run's ctx and starts its checkers.
func (c *Cluster) attach(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runCtx = ctx
	c.syncChecksLocked()
}

// detach stops c's checkers and starts no more until the next attach. Manager.Run calls it
// for every cluster before waiting for its goroutines.
func (c *Cluster) detach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runCtx = nil
	c.stopChecksLocked()
}

func (c *Cluster) stopChecksLocked() {
	for addr, k := range c.checks {
		k.cancel()
		delete(c.checks, addr)
	}
}

// syncChecksLocked makes the running checkers match the current hosts and settings.
func (c *Cluster) syncChecksLocked() {
	var hc *healthcheck.Checker
	if c.set != nil {
		hc = c.set.hc
	}
	if c.removed || c.runCtx == nil || hc == nil {
		c.stopChecksLocked()
		return
	}
	hosts := c.snap.Load().hosts
	live := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		live[h.addr] = true
		if k := c.checks[h.addr]; k != nil {
			if k.hc == hc && k.st == h.st {
				continue
			}
			k.cancel()
		}
		c.startCheckLocked(h.addr, h.st, hc)
	}
	for addr, k := range c.checks {
		if !live[addr] {
			k.cancel()
			delete(c.checks, addr)
		}
	}
}

// startCheckLocked starts the checker of one host. Its goroutine joins Manager.Run's
// WaitGroup; the Add happens under c.mu while runCtx is set, and Run clears runCtx (detach)
// before it waits, so no Add can race with the Wait.
func (c *Cluster) startCheckLocked(addr string, st *hostState, hc *healthcheck.Checker) {
	ctx, cancel := context.WithCancel(c.runCtx)
	k := &hostCheck{hc: hc, st: st, cancel: cancel}
	c.checks[addr] = k
	status := healthcheck.Status{Up: st.down.Load()&downActive == 0, Confirmed: st.checked.Load()}
	m := c.m
	m.wg.Add(1)
	m.checkers.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.checkers.Add(-1)
		defer cancel()
		defer c.recoverCheck(k, addr)
		hc.Run(ctx, addr, status, func(r healthcheck.Report) { c.checked(k, addr, r) })
	}()
}

// recoverCheck keeps a panicking checker (a bug) from taking the process down (MOSN's
// health-check panic): it is logged, and the host's checker is started again at the next
// rebuild of the cluster.
func (c *Cluster) recoverCheck(k *hostCheck, addr string) {
	r := recover()
	if r == nil {
		return
	}
	c.log.Error("health checker panicked; it restarts when the cluster's hosts next change",
		zap.String(log.FieldHost, addr), zap.Any("panic", r), zap.Stack("stack"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks[addr] == k {
		delete(c.checks, addr)
	}
}

// checked applies one check's report.
func (c *Cluster) checked(k *hostCheck, addr string, r healthcheck.Report) {
	if r.Err == nil {
		c.hcPass.Inc()
	} else {
		c.hcFail.Inc()
		if ce := c.log.Check(zap.DebugLevel, "health check failed"); ce != nil {
			ce.Write(zap.String(log.FieldHost, addr), zap.Error(r.Err))
		}
	}
	k.st.checked.Store(r.Status.Confirmed)
	if !r.Changed {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks[addr] != k { // stopped meanwhile: its verdict is stale
		return
	}
	c.markLocked(k.st, downActive, !r.Status.Up)
	if r.Status.Up {
		c.log.Info("host passed health checks", zap.String(log.FieldHost, addr), zap.Bool("healthy", k.st.down.Load() == 0))
	} else {
		c.log.Warn("host failed health checks", zap.String(log.FieldHost, addr), zap.Error(r.Err))
	}
}
