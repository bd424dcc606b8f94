package xprotocol

import (
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// errEngineClosed is returned for a connection wanted after Close.
var errEngineClosed = errors.New("xprotocol: engine closed")

// Close reasons of upstream connections.
const (
	closeGoAway    network.CloseReason = "go_away"
	closeHeartbeat network.CloseReason = "heartbeat_timeout"
)

// errPoolGone is dial's answer when the host pool it was given was dropped (dropEmpty):
// the caller looks the pool up again.
var errPoolGone = errors.New("xprotocol: host pool dropped")

// clusterPool holds one cluster's host pools.
type clusterPool struct {
	mu    sync.Mutex                           // writers of hosts
	hosts atomic.Pointer[map[string]*hostPool] // copy on write
	dead  bool                                 // dropped from Engine.pools; under mu: no host pool is added
}

// hostPool holds the multiplexed connections to one host.
type hostPool struct {
	addr  string
	cp    *clusterPool
	mu    sync.Mutex                // dialing and writers of conns
	conns atomic.Pointer[[]*upConn] // copy on write
	size  atomic.Int32
	rr    atomic.Uint32
	dead  bool // under mu: dropped from cp (it had no connection); nothing is added to it
}

func (e *Engine) clusterPool(name string) *clusterPool {
	if cp, ok := (*e.pools.Load())[name]; ok {
		return cp
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m := *e.pools.Load()
	if cp, ok := m[name]; ok {
		return cp
	}
	cp := &clusterPool{}
	empty := map[string]*hostPool{}
	cp.hosts.Store(&empty)
	nm := maps.Clone(m)
	nm[name] = cp
	e.pools.Store(&nm)
	return cp
}

// host returns the pool of addr, made if need be; nil when cp was dropped.
func (cp *clusterPool) host(addr string) *hostPool {
	if hp, ok := (*cp.hosts.Load())[addr]; ok {
		return hp
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	m := *cp.hosts.Load()
	if hp, ok := m[addr]; ok {
		return hp
	}
	if cp.dead {
		return nil
	}
	hp := &hostPool{addr: addr, cp: cp}
	var none []*upConn
	hp.conns.Store(&none)
	nm := maps.Clone(m)
	nm[addr] = hp
	cp.hosts.Store(&nm)
	return hp
}

// hostPool returns the pool of addr in the named cluster's pool, made if need be.
func (e *Engine) hostPool(name, addr string) *hostPool {
	for {
		if hp := e.clusterPool(name).host(addr); hp != nil {
			return hp
		}
		// That cluster pool was just dropped (dropClusterPool): the next lookup makes another.
	}
}

// forget takes hp, which is dead, out of cp's map.
func (cp *clusterPool) forget(hp *hostPool) {
	cp.mu.Lock()
	m := *cp.hosts.Load()
	if m[hp.addr] == hp {
		nm := maps.Clone(m)
		delete(nm, hp.addr)
		cp.hosts.Store(&nm)
	}
	cp.mu.Unlock()
}

// setLocked publishes a new connection list; hp.mu is held.
func (hp *hostPool) setLocked(cs []*upConn) { hp.conns.Store(&cs) }

func (hp *hostPool) remove(u *upConn) {
	hp.mu.Lock()
	cs := *hp.conns.Load()
	if i := slices.Index(cs, u); i >= 0 {
		hp.setLocked(slices.Delete(slices.Clone(cs), i, i+1))
	}
	hp.mu.Unlock()
}

// conn returns a multiplexed connection to host (or, when a new connection has to be
// dialled and the cluster dials another host, to that one).
func (e *Engine) conn(s *session, cl *cluster.Cluster, host *cluster.Host, lr *lb.Request) (*upConn, error) {
	for {
		hp := e.hostPool(cl.Name(), host.Addr())
		cs := *hp.conns.Load()
		if n := len(cs); n > 0 && n >= int(hp.size.Load()) {
			if u := cs[hp.rr.Add(1)%uint32(n)]; u.Available() && !u.host.Removed() {
				return u, nil
			}
		}
		if u, err := e.dial(s, cl, hp, host, lr); err != errPoolGone {
			return u, err
		}
	}
}

func (e *Engine) poolSize(cl *cluster.Cluster) int {
	n := int(cl.Config().ConnPoolSize)
	if n <= 0 {
		n = e.cfg.ConnPoolSize
	}
	return min(n, MaxConnPoolSize)
}

// dial is conn's slow path: prune dead connections, and dial host while it has fewer
// than its pool size. Dialling holds hp.mu, so concurrent requests for the host wait for
// the one connection rather than each dialling its own. The dial starts at the host the
// request's pick chose (DialHost): a pick of the dial's own would hold a second unit of
// the balancer's load on a host for the connection's whole life, and might connect to
// another host than the one the request is accounted to.
func (e *Engine) dial(s *session, cl *cluster.Cluster, hp *hostPool, host *cluster.Host, lr *lb.Request) (*upConn, error) {
	if e.isShut.Load() {
		return nil, errEngineClosed
	}
	s.flush() // do not hold requests already queued while waiting for the lock or a dial
	// Connections made before their cluster's connection settings changed (Host.Removed)
	// carry no new request: they drain once hp.mu is released.
	var stale []*upConn
	defer func() {
		for _, u := range stale {
			u.GoAway()
		}
	}()
	hp.mu.Lock()
	if hp.dead {
		hp.mu.Unlock()
		hp.cp.forget(hp)
		return nil, errPoolGone
	}
	size := e.poolSize(cl)
	hp.size.Store(int32(size))
	cs := *hp.conns.Load()
	live := slices.DeleteFunc(slices.Clone(cs), func(u *upConn) bool {
		if u.Available() && u.host.Removed() {
			stale = append(stale, u)
			return true
		}
		return !u.Available()
	})
	if len(live) != len(cs) {
		hp.setLocked(live)
	}
	if len(live) >= size {
		u := live[hp.rr.Add(1)%uint32(len(live))]
		hp.mu.Unlock()
		return u, nil
	}
	raw, h, done, err := cl.DialHost(s.waitCtx(cl), lr, host)
	if err != nil {
		hp.mu.Unlock()
		return nil, err
	}
	if h.Addr() == hp.addr {
		u, err := e.newUpConn(hp, cl, h, raw, done)
		if err == nil {
			hp.setLocked(append(slices.Clone(live), u))
		}
		hp.mu.Unlock()
		return u, err
	}
	hp.mu.Unlock()
	// The dial went to another host: its connection joins that host's pool, looked up
	// again should the watcher drop it meanwhile.
	for {
		target := e.hostPool(cl.Name(), h.Addr())
		target.mu.Lock()
		if target.dead {
			target.mu.Unlock()
			target.cp.forget(target)
			continue
		}
		u, err := e.newUpConn(target, cl, h, raw, done)
		if err == nil {
			target.setLocked(append(slices.Clone(*target.conns.Load()), u))
		}
		target.mu.Unlock()
		return u, err
	}
}

// watchHosts runs, until quit is closed, at every change of the clusters' hosts
// (cluster.Manager.HostsChanged): connections to hosts that left their cluster (or whose
// cluster was removed, or changed its connection settings) drain, and host and cluster
// pools left empty are dropped. Requests do not wait for it. A pass that found a host
// pool busy (a dial in progress) runs again after a tick.
func (e *Engine) watchHosts(changed, quit <-chan struct{}) {
	defer e.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-changed:
		case <-t.C:
		case <-quit:
			return
		}
		changed = e.cfg.Clusters.HostsChanged() // before the pass: no change is missed
		if e.dropRemoved() {
			t.Reset(e.cfg.Tick)
		}
	}
}

// dropRemoved drains the connections whose host is Removed and drops the empty pools; it
// reports whether a host pool was busy and kept for the next pass. It holds no lock while
// calling GoAway (which takes the host pool's).
func (e *Engine) dropRemoved() (busy bool) {
	e.mu.Lock()
	var stale []*upConn
	for u := range e.conns {
		if u.Available() && u.host.Removed() {
			stale = append(stale, u)
		}
	}
	e.mu.Unlock()
	for _, u := range stale {
		u.GoAway()
	}
	for name, cp := range *e.pools.Load() {
		empty, b := cp.dropEmpty()
		busy = busy || b
		if empty {
			e.dropClusterPool(name, cp)
		}
	}
	return busy
}

// dropEmpty drops cp's host pools that have no connection; a pool whose lock is held (a
// dial in progress) is kept and reported busy. It reports whether cp has no pool left.
func (cp *clusterPool) dropEmpty() (empty, busy bool) {
	var gone []*hostPool
	for _, hp := range *cp.hosts.Load() {
		if !hp.mu.TryLock() {
			busy = true
			continue
		}
		if !hp.dead && len(*hp.conns.Load()) == 0 {
			hp.dead = true // dial and the other host's dial look the pool up again
			gone = append(gone, hp)
		}
		hp.mu.Unlock()
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	m := *cp.hosts.Load()
	if len(gone) > 0 {
		nm := maps.Clone(m)
		for _, hp := range gone {
			if nm[hp.addr] == hp {
				delete(nm, hp.addr)
			}
		}
		cp.hosts.Store(&nm)
		m = nm
	}
	return len(m) == 0, busy
}

// dropClusterPool drops cp, the pool of the named cluster, if it has no host pool.
func (e *Engine) dropClusterPool(name string, cp *clusterPool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := *e.pools.Load()
	if m[name] != cp {
		return
	}
	cp.mu.Lock()
	empty := len(*cp.hosts.Load()) == 0
	if empty {
		cp.dead = true
	}
	cp.mu.Unlock()
	if !empty {
		return
	}
	nm := maps.Clone(m)
	delete(nm, name)
	e.pools.Store(&nm)
}

// pending is a request waiting for its response on an upstream connection.
type pending struct {
	s        *session
	req      reqInfo // downstream id and what Hijack needs
	start    int64   // monoNow
	deadline int64   // monoNow
	pickDone func(lb.DoneInfo)
	cl       *cluster.Cluster
}

// upConn is one multiplexed upstream connection.
type upConn struct {
	e    *Engine
	hp   *hostPool
	cl   *cluster.Cluster
	host *cluster.Host
	c    *network.Conn
	done func(lb.DoneInfo)

	gone     atomic.Bool // torn down
	draining atomic.Bool // go-away received: no new requests
	lastRead atomic.Int64
	stalled  atomic.Int64 // c.Acked()+1 when a wait for room ended with nothing taken (roomOn)

	mu      sync.Mutex
	dead    bool
	pending map[uint64]pending
	nextID  uint32
	wheel   wheel

	// Reader goroutine only.
	f     xprotocol.Frame
	rdOut batch
	// Ticker goroutine only.
	expired []pending
	tkOut   batch
	lastHB  int64
	misses  int
}

func (e *Engine) newUpConn(hp *hostPool, cl *cluster.Cluster, h *cluster.Host, raw net.Conn, done func(lb.DoneInfo)) (*upConn, error) {
	c := network.NewConn(raw, network.ConnOptions{
		Pool:        e.cfg.Pool,
		BufferLimit: e.xp.MaxFrameSize() + 64<<10, // any frame the codec accepts fits
		Log:         e.log,
	})
	now := monoNow()
	u := &upConn{e: e, hp: hp, cl: cl, host: h, c: c, done: done, pending: make(map[uint64]pending)}
	u.wheel.tick = int64(e.cfg.Tick)
	u.wheel.cur = now / u.wheel.tick
	u.lastRead.Store(now)
	u.rdOut.e, u.tkOut.e = e, e
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		c.Close(network.CloseDrain)
		done(lb.DoneInfo{})
		return nil, errEngineClosed
	}
	e.conns[u] = struct{}{}
	e.wg.Add(2)
	e.mu.Unlock()
	go u.readLoop()
	go u.tickLoop()
	return u, nil
}

// Protocol implements stream.ClientConnection.
func (u *upConn) Protocol() stream.Protocol { return stream.Protocol(u.e.xp.Name()) }

// ActiveStreams implements stream.ClientConnection: requests waiting for a response.
func (u *upConn) ActiveStreams() int {
	u.mu.Lock()
	n := len(u.pending)
	u.mu.Unlock()
	return n
}

// Available implements stream.ClientConnection: new requests may use u.
func (u *upConn) Available() bool { return !u.gone.Load() && !u.draining.Load() }

// GoAway implements stream.ClientConnection: u takes no new requests, leaves its host's
// pool and closes once the pending ones are answered (or expire).
func (u *upConn) GoAway() {
	u.goAway("proxy")
	u.closeIfIdle()
}

// goAway marks u draining and takes it out of its host's pool; from names who asked
// (the upstream's go-away frame, or the proxy). Whoever calls it closes u when idle.
func (u *upConn) goAway(from string) {
	if u.draining.Swap(true) {
		return
	}
	u.hp.remove(u)
	u.e.log.Info("xprotocol: draining upstream connection", zap.String("cluster", u.cl.Name()),
		zap.String("host", u.host.Addr()), zap.String("go_away_from", from))
}

// Close implements stream.ClientConnection: the connection closes and its reader answers
// the pending requests with the connection-closed status.
func (u *upConn) Close() error {
	u.c.Close(network.CloseDrain)
	return nil
}

// register assigns an upstream request id and, for a request that expects a response,
// records p under it. It fails when the connection is closing or draining.
func (u *upConn) register(p *pending, twoWay bool) (uint64, bool) {
	u.mu.Lock()
	if u.dead || u.draining.Load() {
		u.mu.Unlock()
		return 0, false
	}
	id := u.newIDLocked()
	if twoWay {
		u.pending[id] = *p
		u.wheel.add(id, p.deadline)
		p.s.inflight.Add(1)
	}
	u.mu.Unlock()
	return id, true
}

func (u *upConn) newIDLocked() uint64 {
	for {
		u.nextID++
		if u.nextID == 0 {
			continue
		}
		id := uint64(u.nextID)
		if _, busy := u.pending[id]; !busy {
			return id
		}
	}
}

// take removes and returns the pending entry for id.
func (u *upConn) take(id uint64) (pending, bool) {
	u.mu.Lock()
	p, ok := u.pending[id]
	if ok {
		delete(u.pending, id)
	}
	u.mu.Unlock()
	return p, ok
}

// finish releases what a finished request held (its session's in-flight count drops
// when the batch holding its answer is delivered).
func (u *upConn) finish(p *pending, err error, ok bool) {
	p.cl.Release(cluster.MaxRequests)
	var lat time.Duration
	if err == nil {
		lat = time.Duration(monoNow() - p.start)
	}
	p.pickDone(lb.DoneInfo{Err: err, Latency: lat})
	u.host.ReportResult(ok)
}

// readLoop reads responses until the connection ends, then answers what is pending.
func (u *upConn) readLoop() {
	defer u.e.wg.Done()
	err := u.c.ReadLoop(u.onData)
	u.rdOut.flush()
	reason := network.CloseRemote
	switch {
	case err == nil:
	case errors.Is(err, errStop):
		reason = network.CloseProtocolError
	default:
		reason = network.CloseError
		if ce := u.e.log.Check(zap.DebugLevel, "xprotocol: upstream connection ended"); ce != nil {
			ce.Write(zap.String("host", u.host.Addr()), zap.Error(err))
		}
	}
	u.teardown(reason)
}

func (u *upConn) onData(b *buffer.IoBuffer) error {
	e := u.e
	u.lastRead.Store(monoNow())
	for b.Len() > 0 {
		u.f.Reset()
		n, err := e.xp.Decode(b.Bytes(), &u.f)
		if err != nil {
			u.rdOut.flush()
			e.log.Warn("xprotocol: bad frame from upstream, closing connection",
				zap.String("cluster", u.cl.Name()), zap.String("host", u.host.Addr()), zap.Error(err))
			e.protoErr.Inc()
			u.c.Close(network.CloseProtocolError)
			return errStop
		}
		if n == 0 {
			break
		}
		f := &u.f
		switch f.Kind {
		case xprotocol.KindResponse:
			if p, ok := u.take(f.ID); ok {
				e.xp.SetID(f, p.req.id)
				u.rdOut.add(p.s, f.Raw)
				u.finish(&p, nil, e.xp.HTTPStatus(f) < 500)
			}
			// Otherwise the request timed out already (or the id is not ours): drop it.
		case xprotocol.KindHeartbeat:
			ob := e.cfg.Pool.NewBuffer(32)
			_ = e.xp.HeartbeatReply(ob, f)
			u.sendControl(ob)
		case xprotocol.KindGoAway:
			u.goAway("upstream")
		}
		// Heartbeat replies only prove liveness (lastRead); requests from an upstream are
		// not served.
		b.Drain(n)
	}
	u.rdOut.flush()
	if u.draining.Load() {
		u.closeIfIdle()
	}
	return nil
}

func (u *upConn) closeIfIdle() {
	u.mu.Lock()
	n := len(u.pending)
	u.mu.Unlock()
	if n == 0 {
		u.c.Close(closeGoAway)
	}
}

// teardown runs once, on the reader goroutine, when the connection ended: every pending
// request is answered with the connection-closed status.
func (u *upConn) teardown(reason network.CloseReason) {
	e := u.e
	u.gone.Store(true)
	u.c.Close(reason)
	u.hp.remove(u)
	u.mu.Lock()
	u.dead = true
	all := make([]pending, 0, len(u.pending))
	for _, p := range u.pending {
		all = append(all, p)
	}
	clear(u.pending)
	u.wheel = wheel{}
	u.mu.Unlock()
	for i := range all {
		p := &all[i]
		e.fails[fClosed].Inc()
		u.rdOut.hijack(p, xprotocol.CauseConnectionClosed)
		u.finish(p, errClosed, false)
	}
	u.rdOut.flush()
	u.done(lb.DoneInfo{})
	e.mu.Lock()
	delete(e.conns, u)
	e.mu.Unlock()
}

// tickLoop expires requests and keeps the connection alive until it closes.
func (u *upConn) tickLoop() {
	defer u.e.wg.Done()
	t := time.NewTicker(u.e.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-u.c.Done():
			return
		case <-t.C:
		}
		u.onTick(monoNow())
	}
}

func (u *upConn) onTick(now int64) {
	e := u.e
	u.mu.Lock()
	u.expired = u.wheel.advance(now, u.pending, u.expired)
	idle := len(u.pending) == 0
	u.mu.Unlock()
	for i := range u.expired {
		p := &u.expired[i]
		e.fails[fTimeout].Inc()
		u.tkOut.hijack(p, xprotocol.CauseTimeout)
		u.finish(p, errTimeout, false)
	}
	clear(u.expired)
	u.expired = u.expired[:0]
	u.tkOut.flush()
	if idle && u.draining.Load() {
		u.c.Close(closeGoAway)
		return
	}
	if idle && u.host.Removed() {
		// Dialled to a host picked before it left, after the watcher's pass: nothing
		// else would drain it.
		u.GoAway()
		return
	}
	u.keepalive(now)
}

// keepalive sends a heartbeat after HeartbeatInterval without reading anything, and
// closes the connection after HeartbeatMisses such intervals in a row.
func (u *upConn) keepalive(now int64) {
	e := u.e
	iv := int64(e.cfg.HeartbeatInterval)
	if iv <= 0 {
		return
	}
	last := u.lastRead.Load()
	if now-last < iv {
		u.misses = 0
		return
	}
	if now-u.lastHB < iv {
		return
	}
	if u.lastHB > last { // the previous heartbeat got nothing back for a whole interval
		u.misses++
		if u.misses >= e.cfg.HeartbeatMisses {
			e.log.Info("xprotocol: upstream did not answer heartbeats, closing connection",
				zap.String("cluster", u.cl.Name()), zap.String("host", u.host.Addr()), zap.Int("misses", u.misses))
			u.c.Close(closeHeartbeat)
			return
		}
	}
	u.mu.Lock()
	if u.dead {
		u.mu.Unlock()
		return
	}
	id := u.newIDLocked()
	u.mu.Unlock()
	ob := e.cfg.Pool.NewBuffer(32)
	if err := e.xp.Heartbeat(ob, id); err != nil {
		ob.Release()
		return
	}
	u.lastHB = now
	u.sendControl(ob)
}

// sendControl queues a heartbeat or a heartbeat reply without waiting for room and
// without writing on the caller's goroutine: the reader and the ticker must not stall
// behind an upstream that stops reading (a blocked reader leaves answers unread, a
// blocked ticker leaves requests unexpired). It is dropped when the queue is full.
func (u *upConn) sendControl(ob *buffer.IoBuffer) {
	if u.c.Queued() >= u.e.xp.MaxFrameSize() {
		ob.Release()
		return
	}
	if u.c.Queue(ob) == nil {
		u.c.KickAsync()
	}
}

// batch collects bytes per downstream session during one read or tick, written with one
// Write each.
type batch struct {
	e    *Engine
	outs []downOut
}

type downOut struct {
	s    *session
	b    *buffer.IoBuffer
	done int64 // requests answered in b
}

func (bt *batch) out(s *session, n int) *downOut {
	for i := range bt.outs {
		if bt.outs[i].s == s {
			return &bt.outs[i]
		}
	}
	bt.outs = append(bt.outs, downOut{s: s, b: bt.e.cfg.Pool.NewBuffer(max(n, 4096))})
	return &bt.outs[len(bt.outs)-1]
}

// add appends the answer raw to s's batch.
func (bt *batch) add(s *session, raw []byte) {
	o := bt.out(s, len(raw))
	_, _ = o.b.Write(raw)
	o.done++
	if o.b.Len() >= flushAt {
		bt.flush()
	}
}

// hijack appends the proxy's answer for p to its session's batch.
func (bt *batch) hijack(p *pending, cause xprotocol.Cause) {
	o := bt.out(p.s, 64)
	bt.e.writeHijack(o.b, &p.req, cause)
	o.done++
}

// flush hands the collected bytes to each session's writer (never waiting for a client),
// then counts the requests they answer as no longer in flight.
func (bt *batch) flush() {
	for i := range bt.outs {
		o := &bt.outs[i]
		o.s.deliver(o.b)
		if o.s.inflight.Add(-o.done) == 0 && o.s.drainAt.Load() != 0 {
			o.s.kick()
		}
		bt.outs[i] = downOut{}
	}
	bt.outs = bt.outs[:0]
}

// wheelSlots is the number of slots of the deadline wheel; a lap is wheelSlots ticks.
const wheelSlots = 256

// wheel is a coarse timer wheel of request ids by deadline. Answered requests stay in
// their slot until it comes round (they are skipped then); requests whose deadline is more
// than a lap away are kept for the next lap.
type wheel struct {
	tick  int64 // ns per slot
	cur   int64 // last tick processed
	slots [wheelSlots][]uint64
}

func (w *wheel) add(id uint64, deadline int64) {
	if w.tick == 0 {
		return
	}
	t := (deadline + w.tick - 1) / w.tick
	if t <= w.cur {
		t = w.cur + 1
	}
	i := t % wheelSlots
	w.slots[i] = append(w.slots[i], id)
}

// advance processes the ticks up to now, moving the entries of m whose deadline passed to
// expired (and out of m).
func (w *wheel) advance(now int64, m map[uint64]pending, expired []pending) []pending {
	if w.tick == 0 {
		return expired
	}
	nowT := now / w.tick
	steps := min(nowT-w.cur, wheelSlots)
	for k := int64(1); k <= steps; k++ {
		i := (w.cur + k) % wheelSlots
		ids := w.slots[i]
		keep := ids[:0]
		for _, id := range ids {
			p, ok := m[id]
			if !ok {
				continue
			}
			if p.deadline <= now {
				delete(m, id)
				expired = append(expired, p)
				continue
			}
			keep = append(keep, id)
		}
		if cap(keep) > 4096 && len(keep) < cap(keep)/8 {
			keep = slices.Clone(keep) // let a burst's backing array go
		}
		w.slots[i] = keep
	}
	if nowT > w.cur {
		w.cur = nowT
	}
	return expired
}
