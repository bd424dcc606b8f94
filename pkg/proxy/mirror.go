package proxy

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Mirroring bounds: a few workers per Proxy and a short queue; a request that finds the
// queue full is not mirrored (counted as dropped), so mirroring never delays or affects
// the main request.
const (
	mirrorWorkers = 4
	mirrorQueue   = 64
	mirrorTimeout = 10 * time.Second
)

// proxyExt holds the mirror workers. (The idle upstream connections and their sweeper
// live in connpool.PingPong.)
type proxyExt struct {
	mirrorOnce sync.Once
	jobs       chan mirrorJob
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

type mirrorJob struct {
	cluster string
	head    *buffer.IoBuffer // the request head as sent to the main cluster
	timeout time.Duration
}

// mirror queues a copy of the bodiless request head in s.hb for the route's mirror
// cluster when the route mirrors and the draw hits.
func (s *session) mirror(rt *router.Route) {
	if !s.x.upgrade {
		s.p.mirror(rt, s.hb.Bytes())
	}
}

// mirror queues a copy of a bodiless request's HTTP/1 head for the route's mirror
// cluster when the route mirrors and the draw hits.
func (p *Proxy) mirror(rt *router.Route, head []byte) {
	m, ok := rt.Mirror()
	if !ok || m.Cluster == "" || !m.Hit(rand.Uint64()) {
		return
	}
	p.ext.mirrorOnce.Do(p.startMirror)
	if p.ext.jobs == nil {
		return
	}
	hb := p.cfg.Pool.NewBuffer(len(head))
	_, _ = hb.Write(head)
	t := rt.Timeout()
	if t <= 0 || t > mirrorTimeout {
		t = mirrorTimeout
	}
	select {
	case p.ext.jobs <- mirrorJob{cluster: m.Cluster, head: hb, timeout: t}:
	default:
		hb.Release()
		p.mirrorMetric(m.Cluster, "dropped")
	}
}

func (p *Proxy) mirrorMetric(cluster, result string) {
	if m := p.cfg.Metrics; m != nil && m.UpstreamMirrors != nil {
		m.UpstreamMirrors.WithLabelValues(cluster, result).Inc()
	}
}

func (p *Proxy) startMirror() {
	p.ext.ctx, p.ext.cancel = context.WithCancel(context.Background())
	p.ext.jobs = make(chan mirrorJob, mirrorQueue)
	for range mirrorWorkers {
		p.ext.wg.Add(1)
		go p.mirrorWorker()
	}
}

func (p *Proxy) mirrorWorker() {
	defer p.ext.wg.Done()
	for {
		select {
		case <-p.ext.ctx.Done():
			return
		case j := <-p.ext.jobs:
			p.mirrorOne(j)
		}
	}
}

// mirrorOne sends one mirrored request on a new connection and reads the response head,
// which it discards with the connection.
func (p *Proxy) mirrorOne(j mirrorJob) {
	defer j.head.Release()
	cl, ok := p.cfg.Clusters.Get(j.cluster)
	if !ok {
		p.mirrorMetric(j.cluster, "failed")
		return
	}
	ctx, cancel := context.WithTimeout(p.ext.ctx, j.timeout)
	defer cancel()
	raw, _, done, err := cl.Dial(ctx, &lb.Request{})
	if err != nil {
		p.mirrorMetric(j.cluster, "failed")
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer func() {
		stop()
		_ = raw.Close()
		done(lb.DoneInfo{})
	}()
	_ = raw.SetDeadline(time.Now().Add(j.timeout))
	if _, err := raw.Write(j.head.Bytes()); err != nil {
		p.mirrorMetric(j.cluster, "failed")
		return
	}
	rb := p.cfg.Pool.NewBuffer(4096)
	defer rb.Release()
	var rh http1.ResponseHead
	for {
		if _, err := rb.ReadOnce(raw); err != nil {
			p.mirrorMetric(j.cluster, "failed")
			p.cfg.Log.Debug("proxy: mirrored request failed", zap.String("cluster", j.cluster), zap.Error(err))
			return
		}
		rh = http1.ResponseHead{}
		n, err := http1.ParseResponseHead(rb.Bytes(), p.cfg.Limits, &rh)
		if err != nil {
			p.mirrorMetric(j.cluster, "failed")
			return
		}
		if n > 0 && (rh.Status < 100 || rh.Status >= 200) {
			p.mirrorMetric(j.cluster, "sent")
			return
		}
		if n > 0 {
			rb.Drain(n)
		}
	}
}

// stopExt stops the mirror workers; Close calls it.
func (p *Proxy) stopExt() {
	p.ext.mirrorOnce.Do(func() {}) // no workers start after Close
	if p.ext.cancel != nil {
		p.ext.cancel()
		p.ext.wg.Wait()
		for {
			select {
			case j := <-p.ext.jobs:
				j.head.Release()
				continue
			default:
			}
			break
		}
	}
}
