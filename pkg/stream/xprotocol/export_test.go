package xprotocol

// Internal state the package's external tests (package xprotocol_test) check, so that
// they can assert what the wire does not show: that a request's bookkeeping is released,
// that a connection's goroutines are gone, and what happens when the upstream id wraps.

// Sessions returns the number of downstream connections the engine is serving.
func (e *Engine) Sessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions)
}

// InFlight returns the requests in flight summed over the downstream connections.
func (e *Engine) InFlight() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for s := range e.sessions {
		n += s.inflight.Load()
	}
	return n
}

// UpstreamStats is a snapshot of the upstream side's bookkeeping.
type UpstreamStats struct {
	Conns   int // upstream connections not yet torn down
	Pooled  int // connections offered to new requests by the host pools
	Pending int // requests waiting for a response, over all connections
	Wheel   int // request ids in the deadline wheels (answered ones stay until their slot comes round)
}

// UpstreamStats returns the sizes of the engine's upstream maps.
func (e *Engine) UpstreamStats() UpstreamStats {
	var st UpstreamStats
	e.mu.Lock()
	conns := make([]*upConn, 0, len(e.conns))
	for u := range e.conns {
		conns = append(conns, u)
	}
	e.mu.Unlock()
	st.Conns = len(conns)
	for _, u := range conns {
		u.mu.Lock()
		st.Pending += len(u.pending)
		for i := range u.wheel.slots {
			st.Wheel += len(u.wheel.slots[i])
		}
		u.mu.Unlock()
	}
	for _, cp := range *e.pools.Load() {
		for _, hp := range *cp.hosts.Load() {
			st.Pooled += len(*hp.conns.Load())
		}
	}
	return st
}

// SetNextUpstreamID sets the id counter of every open upstream connection, and returns
// how many there are: the next request (or heartbeat) on each gets id n+1, or the first
// free id after it.
func (e *Engine) SetNextUpstreamID(n uint32) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for u := range e.conns {
		u.mu.Lock()
		u.nextID = n
		u.mu.Unlock()
	}
	return len(e.conns)
}
