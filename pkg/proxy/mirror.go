package proxy

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
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

	// Mirrors to a cluster the manager does not have: unix nanos of the last warning,
	// and how many came since (mirrorUnknown).
	unknownWarn, unknownMuted atomic.Int64
}

type mirrorJob struct {
	cluster string
	head    *buffer.IoBuffer // HTTP/1: the request head as sent to the main cluster; HTTP/2: the body, or nil
	req     *http.Request    // HTTP/2: the request, without its body; nil for HTTP/1
	timeout time.Duration
	limit   int // HTTP/1, while the request is copied: the most bytes head may hold
}

func (j *mirrorJob) release() {
	if j.head != nil {
		j.head.Release()
	}
}

// mirror queues a copy of the bodiless request head in s.hb for the route's mirror
// cluster when the route mirrors and the draw hits.
func (s *session) mirror(rt *router.Route) {
	if !s.x.upgrade {
		s.p.mirror(rt, s.hb.Bytes())
	}
}

// mirrorWithBody starts the copy of a request with a body, its head in s.hb, when the
// route mirrors and the draw hits: mirrorBody adds the body as it is forwarded, as the
// upstream receives it (chunked framing included), and the job is queued once the body
// is complete. A body beyond mirrorH1Limit is not mirrored (counted as dropped, as on
// the HTTP/2 paths past bufferLimit), so a mirror never holds more than that per request.
func (s *session) mirrorWithBody(rt *router.Route) {
	if s.x.upgrade {
		return
	}
	cl, t, ok := mirrorDraw(rt)
	if !ok {
		return
	}
	hb := s.p.cfg.Pool.NewBuffer(s.hb.Len() + 4096)
	_, _ = hb.Write(s.hb.Bytes())
	s.x.mirror = mirrorJob{cluster: cl, head: hb, timeout: t, limit: s.hb.Len() + mirrorH1Limit}
}

// mirrorBody adds a piece of the request body to the mirror copy; done queues it.
func (s *session) mirrorBody(piece []byte, done bool) {
	j := &s.x.mirror
	if j.head == nil {
		return
	}
	if j.head.Len()+len(piece) > j.limit {
		s.p.mirrorMetric(j.cluster, "dropped")
		s.dropMirror()
		return
	}
	_, _ = j.head.Write(piece)
	if done {
		s.p.enqueueMirror(*j)
		*j = mirrorJob{}
	}
}

// dropMirror gives up the mirror copy of a request that did not complete.
func (s *session) dropMirror() {
	s.x.mirror.release()
	s.x.mirror = mirrorJob{}
}

// mirrorDraw returns the route's mirror cluster when the route mirrors and the draw hits,
// and the mirror's timeout: the route's, at most mirrorTimeout.
func mirrorDraw(rt *router.Route) (string, time.Duration, bool) {
	m, ok := rt.Mirror()
	if !ok || m.Cluster == "" || !m.Hit(rand.Uint64()) {
		return "", 0, false
	}
	t := rt.Timeout()
	if t <= 0 || t > mirrorTimeout {
		t = mirrorTimeout
	}
	return m.Cluster, t, true
}

// mirror queues a copy of a bodiless request's HTTP/1 head for the route's mirror
// cluster when the route mirrors and the draw hits.
func (p *Proxy) mirror(rt *router.Route, head []byte) {
	cl, t, ok := mirrorDraw(rt)
	if !ok {
		return
	}
	hb := p.cfg.Pool.NewBuffer(len(head))
	_, _ = hb.Write(head)
	p.enqueueMirror(mirrorJob{cluster: cl, head: hb, timeout: t})
}

// mirrorH1Limit bounds the request body copied for the mirror cluster on the HTTP/1
// path (HTTP/1 client, HTTP/1 upstream): 64 KiB. The HTTP/2 paths keep up to
// bufferLimit.
const mirrorH1Limit = 64 << 10

// mirrorHeadRoom is what a copied request may hold beyond bufferLimit: its head and the
// body's chunk framing.
const mirrorHeadRoom = 16 << 10

// mirrorCopier passes an HTTP/1 request, as net/http writes it (head, body framed,
// trailers), through to w and keeps a copy for the route's mirror cluster: the full
// path's HTTP/2-to-HTTP/1 requests (h2ToH1), whose bytes exist only as that write. A
// request whose body, read through countBody, outgrows bufferLimit is not copied.
type mirrorCopier struct {
	w    io.Writer
	j    mirrorJob
	over bool
	body mirrorBody
	max  int64 // the most body bytes a copy may carry: bufferLimit
}

// mirrorBody counts the bytes read from a request body.
type mirrorBody struct {
	io.ReadCloser
	n atomic.Int64 // atomic: net/http may read a body's first byte on a goroutine of its own
}

func (b *mirrorBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countBody returns body read through m, so that a body beyond bufferLimit is not
// mirrored, whatever the size of the head.
func (m *mirrorCopier) countBody(body io.ReadCloser) io.ReadCloser {
	m.body.ReadCloser = body
	return &m.body
}

// mirrorCopy returns a copier in front of w when the route mirrors and the draw hits;
// nil otherwise.
func (p *Proxy) mirrorCopy(rt *router.Route, w io.Writer) *mirrorCopier {
	cl, t, ok := mirrorDraw(rt)
	if !ok {
		return nil
	}
	return &mirrorCopier{w: w, j: mirrorJob{cluster: cl, head: p.cfg.Pool.NewBuffer(4096), timeout: t,
		limit: p.bufferLimit() + mirrorHeadRoom}, max: int64(p.bufferLimit())}
}

func (m *mirrorCopier) Write(b []byte) (int, error) {
	if !m.over {
		if m.j.head.Len()+len(b) > m.j.limit || m.body.n.Load() > m.max {
			m.over = true
		} else {
			_, _ = m.j.head.Write(b)
		}
	}
	return m.w.Write(b)
}

// finish queues the copy of a request written whole (ok), or gives it up: a request
// beyond the limit is counted as a dropped mirror.
func (m *mirrorCopier) finish(p *Proxy, ok bool) {
	switch {
	case m.over || m.body.n.Load() > m.max:
		p.mirrorMetric(m.j.cluster, "dropped")
	case ok:
		p.enqueueMirror(m.j)
		return
	}
	m.j.release()
}

// mirrorH2 returns the copy of an HTTP/2 upstream request for the route's mirror cluster
// when the route mirrors and the draw hits, else nil. The copy is taken now (the retries
// of the main request change out); queueMirror sends it once its body, if any, is
// complete.
func (p *Proxy) mirrorH2(rt *router.Route, out *http.Request) *mirrorJob {
	cl, t, ok := mirrorDraw(rt)
	if !ok {
		return nil
	}
	u := *out.URL
	req := &http.Request{
		Method:     out.Method,
		URL:        &u,
		Proto:      out.Proto,
		ProtoMajor: out.ProtoMajor,
		ProtoMinor: out.ProtoMinor,
		Header:     out.Header.Clone(),
		Host:       out.Host,
		Body:       http.NoBody,
	}
	return &mirrorJob{cluster: cl, req: req, timeout: t}
}

// queueMirror queues j, made by mirrorH2, with a copy of the request body (nil: none).
func (p *Proxy) queueMirror(j *mirrorJob, body []byte) {
	if len(body) > 0 {
		j.head = p.cfg.Pool.NewBuffer(len(body))
		_, _ = j.head.Write(body)
	}
	p.enqueueMirror(*j)
}

// enqueueMirror hands j to a mirror worker, or drops it when the queue is full.
func (p *Proxy) enqueueMirror(j mirrorJob) {
	p.ext.mirrorOnce.Do(p.startMirror)
	if p.ext.jobs == nil {
		j.release()
		return
	}
	select {
	case p.ext.jobs <- j:
	default:
		j.release()
		p.mirrorMetric(j.cluster, "dropped")
	}
}

// mirrorMetric counts a mirror to the cluster named with result sent, dropped or failed
// (upstream_mirrors_total), on the cluster's held child: a cluster that is not in the
// manager (removed, or never there) has no series, and gets none.
func (p *Proxy) mirrorMetric(name, result string) {
	r := cluster.MirrorFailed
	switch result {
	case "sent":
		r = cluster.MirrorSent
	case "dropped":
		r = cluster.MirrorDropped
	}
	if p.cfg.Clusters == nil {
		return
	}
	if cl, ok := p.cfg.Clusters.Get(name); ok {
		cl.CountMirror(r)
		return
	}
	p.mirrorUnknown(name)
}

// mirrorWarnEvery is the least time between two warnings of mirrors to a missing cluster.
const mirrorWarnEvery = 10 * time.Second

// mirrorUnknown logs a mirror to a cluster the manager does not have: a warning at most
// every mirrorWarnEvery with how many were not logged since, the others at debug. It is
// not counted: upstream_mirrors_total is by cluster, and a label per name a route gives
// would make series for clusters that do not exist, which nothing deletes.
func (p *Proxy) mirrorUnknown(name string) {
	now := time.Now().UnixNano()
	last := p.ext.unknownWarn.Load()
	if now-last < int64(mirrorWarnEvery) || !p.ext.unknownWarn.CompareAndSwap(last, now) {
		p.ext.unknownMuted.Add(1)
		p.cfg.Log.Debug("proxy: request not mirrored: no such cluster", zap.String("cluster", name))
		return
	}
	p.cfg.Log.Warn("proxy: request not mirrored: no such cluster", zap.String("cluster", name),
		zap.Int64("suppressed", p.ext.unknownMuted.Swap(0)))
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

// mirrorOne sends one mirrored request and reads the response head, which it discards:
// over HTTP/1 on a new connection, closed afterwards; over HTTP/2 on a pooled connection
// (mirrorOneH2).
func (p *Proxy) mirrorOne(j mirrorJob) {
	defer j.release()
	cl, ok := p.cfg.Clusters.Get(j.cluster)
	if !ok {
		p.mirrorUnknown(j.cluster)
		return
	}
	ctx, cancel := context.WithTimeout(p.ext.ctx, j.timeout)
	defer cancel()
	if j.req != nil {
		if err := p.mirrorOneH2(ctx, cl, &j); err != nil {
			cl.CountMirror(cluster.MirrorFailed)
			p.cfg.Log.Debug("proxy: mirrored request failed", zap.String("cluster", j.cluster), zap.Error(err))
			return
		}
		cl.CountMirror(cluster.MirrorSent)
		return
	}
	raw, _, done, err := cl.Dial(ctx, &lb.Request{})
	if err != nil {
		cl.CountMirror(cluster.MirrorFailed)
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
		cl.CountMirror(cluster.MirrorFailed)
		return
	}
	rb := p.cfg.Pool.NewBuffer(4096)
	defer rb.Release()
	var rh http1.ResponseHead
	for {
		// What is buffered is parsed first: an interim answer and the final one can come
		// in one read.
		rh = http1.ResponseHead{}
		n, err := http1.ParseResponseHead(rb.Bytes(), p.cfg.Limits, &rh)
		if err != nil {
			cl.CountMirror(cluster.MirrorFailed)
			return
		}
		if n > 0 && (rh.Status < 100 || rh.Status >= 200) {
			cl.CountMirror(cluster.MirrorSent)
			return
		}
		if n > 0 {
			rb.Drain(n) // an interim answer
			continue
		}
		if _, err := rb.ReadOnce(raw); err != nil {
			cl.CountMirror(cluster.MirrorFailed)
			p.cfg.Log.Debug("proxy: mirrored request failed", zap.String("cluster", j.cluster), zap.Error(err))
			return
		}
	}
}

// mirrorOneH2 sends an HTTP/2 mirror job to a host of cl and discards the answer: the
// response body is not read (closing it resets the stream).
func (p *Proxy) mirrorOneH2(ctx context.Context, cl *cluster.Cluster, j *mirrorJob) (err error) {
	t := h2Target{cl: cl, start: time.Now()}
	host, done, err := cl.Pick(ctx, &t.lr)
	if err != nil {
		return err
	}
	t.host = host
	defer func() {
		for _, cc := range t.unpooled {
			_ = cc.Close()
		}
		done(lb.DoneInfo{Err: err, Latency: time.Since(t.start)})
	}()
	cc, err := p.h2Conn(ctx, &t)
	if err != nil {
		return err
	}
	req := j.req.WithContext(ctx)
	req.URL.Host = host.Addr()
	var body *mirrorReqBody
	if j.head != nil {
		body = &mirrorReqBody{Reader: bytes.NewReader(j.head.Bytes()), closed: make(chan struct{})}
		req.Body, req.ContentLength = body, int64(j.head.Len())
	}
	resp, err := cc.RoundTrip(req)
	if err == nil {
		err = resp.Body.Close()
	}
	if body != nil {
		// x/net may still be sending the body: the pooled buffer goes back only once it
		// closed the body (it always does, when the stream ends).
		select {
		case <-body.closed:
		case <-time.After(j.timeout):
			j.head = nil // left to the garbage collector
		}
	}
	return err
}

// mirrorReqBody is a mirrored request's body; closed is closed when x/net is done with it.
type mirrorReqBody struct {
	*bytes.Reader
	once   sync.Once
	closed chan struct{}
}

func (b *mirrorReqBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
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
				j.release()
				continue
			default:
			}
			break
		}
	}
}
