package cluster

import (
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log"
)

// Passive outlier detection (Envoy's consecutive-5xx detector). Dial records each connect
// attempt and proxies report request outcomes (Host.ReportResult); threshold failures in a
// row eject the host. An ejection lasts base_ejection_time × the host's ejection count,
// capped by max_ejection_time, and ends on a timer (one time.AfterFunc per ejected host,
// no ticker). The count drops by one for every interval the host has spent back in
// service, computed when it is next ejected. A host is ejected only if no host is, or if
// the ejected share stays within max_ejection_percent afterwards (Envoy's rule: one
// ejection is always possible); and, since mosnlite has no panic routing, never when it is
// the last host up. A refused ejection resets the host's count: it is tried again after
// another threshold failures.

type outlierSettings struct {
	threshold  uint32
	interval   time.Duration
	base       time.Duration
	max        time.Duration
	maxPercent int
}

func newOutlier(cfg *config.OutlierDetection) (*outlierSettings, error) {
	if errs := cfg.Check(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = "outlier_detection." + e.Error()
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	o := &outlierSettings{
		threshold:  cfg.Threshold(),
		interval:   cfg.Interval.Or(config.DefaultOutlierInterval),
		base:       cfg.BaseEjectionTime.Or(config.DefaultOutlierBaseEjectionTime),
		maxPercent: config.DefaultOutlierMaxEjectionPercent,
	}
	o.max = max(cfg.MaxEjectionTime.Or(config.DefaultOutlierMaxEjectionTime), o.base)
	if cfg.MaxEjectionPercent != nil {
		o.maxPercent = int(*cfg.MaxEjectionPercent)
	}
	return o, nil
}

// ejectionTime is how long the n-th ejection (n ≥ 1) lasts.
func (o *outlierSettings) ejectionTime(n uint32) time.Duration {
	if time.Duration(n) >= o.max/o.base {
		return o.max
	}
	return o.base * time.Duration(n)
}

// recordResult counts one outcome for outlier detection. A success only clears a non-zero
// count (no write to a shared cache line in the common case); a failure takes c.mu only
// when it reaches the threshold.
func (c *Cluster) recordResult(st *hostState, ok bool) {
	if ok {
		if st.fails.Load() != 0 {
			st.fails.Store(0)
		}
		return
	}
	od := c.snap.Load().set.outlier
	if od == nil || st.fails.Add(1) < od.threshold {
		return
	}
	c.tryEject(st)
}

func (c *Cluster) tryEject(st *hostState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	od := c.set.outlier
	if od == nil || c.removed || c.states[st.addr] != st || st.down.Load()&downOutlier != 0 {
		return
	}
	n := st.fails.Swap(0) // concurrent failures: only the one that still sees the count acts
	if n < od.threshold {
		return
	}
	s := c.snap.Load()
	why := ""
	switch {
	case c.ejected > 0 && (c.ejected+1)*100 > od.maxPercent*len(s.hosts):
		why = "max_ejection_percent reached"
	case st.down.Load() == 0 && len(s.healthy) <= 1:
		why = "last healthy host"
	}
	if why != "" {
		if ce := c.log.Check(zap.DebugLevel, "outlier not ejected"); ce != nil {
			ce.Write(zap.String(log.FieldHost, st.addr), zap.Uint32("consecutive_failures", n), zap.String("reason", why))
		}
		return
	}
	now := c.m.o.Now()
	if st.ejections > 0 && !st.unejectedAt.IsZero() {
		if back := now.Sub(st.unejectedAt) / od.interval; back > 0 {
			st.ejections -= uint32(min(int64(back), int64(st.ejections)))
		}
	}
	if st.ejections < 1<<31 {
		st.ejections++
	}
	d := od.ejectionTime(st.ejections)
	gen := st.ejectGen
	st.ejectTimer = time.AfterFunc(d, func() { c.uneject(st, gen) })
	c.ejected++
	c.ejectedG.Set(float64(c.ejected))
	c.ejectionC.Inc()
	c.markLocked(st, downOutlier, true)
	c.log.Warn("host ejected by outlier detection", zap.String(log.FieldHost, st.addr),
		zap.Uint32("consecutive_failures", n), zap.Duration("for", d), zap.Uint32("ejections", st.ejections))
}

// uneject ends the ejection gen of st when its time is up.
func (c *Cluster) uneject(st *hostState, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.ejectGen != gen || st.down.Load()&downOutlier == 0 || c.removed || c.states[st.addr] != st {
		return
	}
	c.endEjectionLocked(st)
	c.rebuildLocked()
	c.log.Info("host returned from ejection", zap.String(log.FieldHost, st.addr), zap.Bool("healthy", st.down.Load() == 0))
}

// endEjectionLocked ends st's ejection, if any, without rebuilding: callers rebuild (or are
// rebuilding, or removing the cluster).
func (c *Cluster) endEjectionLocked(st *hostState) {
	if st.ejectTimer != nil {
		st.ejectTimer.Stop()
		st.ejectTimer = nil
	}
	st.ejectGen++
	if st.down.Load()&downOutlier == 0 {
		return
	}
	st.down.Store(st.down.Load() &^ downOutlier)
	st.fails.Store(0)
	st.unejectedAt = c.m.o.Now()
	c.ejected--
	c.ejectedG.Set(float64(c.ejected))
}
