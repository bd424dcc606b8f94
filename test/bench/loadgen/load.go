package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

// The wire protocol between the load client and the upstream is one byte of mode, then:
//   - modeBulk: the client streams bytes until it closes; the upstream reads and discards them.
//   - modeRequest: the client sends msgSize bytes in all (mode byte included); the upstream
//     answers with msgSize bytes, then waits for the client's EOF and closes.
//
// A connection that closes before its first byte (a readiness probe) is just closed.
const (
	modeBulk    = 'B'
	modeRequest = 'R'
)

// upstream is the harness's upstream server. Its counters are what the measurements read.
type upstream struct {
	ln      net.Listener
	msgSize int
	bytes   atomic.Int64 // bulk bytes received (after the mode byte)
	served  atomic.Int64 // request connections answered
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool
}

func newUpstream(addr string, msgSize int) (*upstream, error) {
	if msgSize < 1 {
		return nil, fmt.Errorf("message size %d: must be at least 1", msgSize)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	u := &upstream{ln: ln, msgSize: msgSize, conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go u.serve()
	return u, nil
}

func (u *upstream) Addr() string { return u.ln.Addr().String() }

func (u *upstream) serve() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the load outran the fd limit; back off, keep serving.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			c.Close()
			return
		}
		u.conns[c] = struct{}{}
		u.wg.Add(1)
		u.mu.Unlock()
		go func() {
			defer u.wg.Done()
			u.handle(c)
			c.Close()
			u.mu.Lock()
			delete(u.conns, c)
			u.mu.Unlock()
		}()
	}
}

func (u *upstream) handle(c net.Conn) {
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return
	}
	switch first[0] {
	case modeBulk:
		buf := make([]byte, 1<<20)
		for {
			n, err := c.Read(buf)
			u.bytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	case modeRequest:
		buf := make([]byte, max(u.msgSize, 512))
		if _, err := io.ReadFull(c, buf[:u.msgSize-1]); err != nil {
			return
		}
		reply := buf[:u.msgSize]
		reply[0] = modeRequest
		if _, err := c.Write(reply); err != nil {
			return
		}
		u.served.Add(1)
		// Wait for the client's close, so that the client closes first, as HTTP/1.0-style
		// short connections do. Anything more it sends is discarded.
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}
}

// Close stops accepting, closes open connections and waits for their goroutines.
func (u *upstream) Close() {
	u.mu.Lock()
	u.closed = true
	u.ln.Close()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// window is one measured interval.
type window struct {
	Elapsed  time.Duration
	Count    float64       // bytes (bulk) or completed connections (conn)
	ProxyCPU time.Duration // utime+stime of the proxy's processes over the window; -1: no proxy
	LoadCPU  time.Duration // this process's (load tool + upstream) CPU over the window
	// OtherCPU is the machine's busy time over the window less the proxy's and this
	// process's: other processes, and interrupt work charged to no process. A large value
	// means the run shared the machine and its figures are not trustworthy.
	OtherCPU time.Duration
	Errors   int64
	ErrText  string // first error seen, if any
}

// measureOpts bounds one measurement in time and in volume.
type measureOpts struct {
	Warmup   time.Duration
	Duration time.Duration
	MaxCount float64                       // stop the window early once this many bytes/conns were counted
	CPU      func() (time.Duration, error) // proxy CPU; nil: no proxy
}

// measure runs a load until the window has ended: warm-up, snapshot, wait for Duration or
// MaxCount, snapshot. counter is read at both snapshots.
func measure(ctx context.Context, o measureOpts, counter func() int64) (window, error) {
	var w window
	select {
	case <-ctx.Done():
		return w, ctx.Err()
	case <-time.After(o.Warmup):
	}
	type snapshot struct {
		n                  int64
		proxy, self, total time.Duration
		at                 time.Time
	}
	snap := func() (s snapshot, err error) {
		s.n = counter()
		s.at = time.Now()
		if s.total, err = benchproc.SystemBusy(); err != nil {
			return s, err
		}
		if s.self, err = benchproc.TotalCPU(os.Getpid()); err != nil {
			return s, err
		}
		if o.CPU != nil {
			if s.proxy, err = o.CPU(); err != nil {
				return s, err
			}
		}
		return s, nil
	}
	s0, err := snap()
	if err != nil {
		return w, err
	}
	deadline := time.NewTimer(o.Duration)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			return w, ctx.Err()
		case <-deadline.C:
			break wait
		case <-tick.C:
			if o.MaxCount > 0 && float64(counter()-s0.n) >= o.MaxCount {
				break wait
			}
		}
	}
	s1, err := snap()
	if err != nil {
		return w, err
	}
	w.Elapsed = s1.at.Sub(s0.at)
	w.Count = float64(s1.n - s0.n)
	w.LoadCPU = s1.self - s0.self
	w.ProxyCPU = -1
	w.OtherCPU = s1.total - s0.total - w.LoadCPU
	if o.CPU != nil {
		w.ProxyCPU = s1.proxy - s0.proxy
		w.OtherCPU -= w.ProxyCPU
	}
	return w, nil
}

// errCounter counts errors and keeps the first one's text.
type errCounter struct {
	n     atomic.Int64
	once  sync.Once
	first string
}

func (e *errCounter) add(err error) {
	e.n.Add(1)
	e.once.Do(func() { e.first = err.Error() })
}

// runBulk streams bytes to addr over conns connections with writes of bufSize bytes and
// measures the rate at which received counts bytes (the upstream's receive counter), or,
// when received is nil, the rate at which this side wrote them.
func runBulk(ctx context.Context, addr string, received func() int64, conns, bufSize int, o measureOpts) (window, error) {
	var (
		written atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
		errs    errCounter
		mu      sync.Mutex
		open    []net.Conn
		dial    = net.Dialer{Timeout: 5 * time.Second}
		ready   = make(chan error, conns)
	)
	buf := make([]byte, bufSize)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for range conns {
		c, err := dial.DialContext(ctx, "tcp", addr)
		if err != nil {
			stop.Store(true)
			mu.Lock()
			for _, c := range open {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
			return window{}, fmt.Errorf("bulk: dial %s: %w", addr, err)
		}
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write([]byte{modeBulk}); err != nil {
				ready <- err
				return
			}
			ready <- nil
			for !stop.Load() {
				n, err := c.Write(buf)
				written.Add(int64(n))
				if err != nil {
					if !stop.Load() {
						errs.add(err)
					}
					return
				}
			}
		}()
	}
	var setupErr error
	for range conns {
		if err := <-ready; err != nil && setupErr == nil {
			setupErr = err
		}
	}
	var w window
	var err error
	if received == nil {
		received = written.Load
	}
	if setupErr == nil {
		w, err = measure(ctx, o, received)
	} else {
		err = fmt.Errorf("bulk: %w", setupErr)
	}
	stop.Store(true)
	mu.Lock()
	for _, c := range open {
		c.Close() // unblocks writers stuck on a full socket
	}
	mu.Unlock()
	wg.Wait()
	w.Errors, w.ErrText = errs.n.Load(), errs.first
	return w, err
}

// runConns opens short connections from workers goroutines: connect, send one msgSize
// request, read the msgSize reply, close. It measures completed connections per second.
func runConns(ctx context.Context, addr string, workers, msgSize int, o measureOpts) (window, error) {
	var (
		stop atomic.Bool
		done atomic.Int64
		errs errCounter
		wg   sync.WaitGroup
	)
	req := make([]byte, msgSize)
	req[0] = modeRequest
	for i := 1; i < msgSize; i++ {
		req[i] = byte('a' + i%26)
	}
	dial := net.Dialer{Timeout: 2 * time.Second}
	one := func(reply []byte) error {
		c, err := dial.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			return err
		}
		if reply[0] != modeRequest {
			return fmt.Errorf("bad reply %q", reply[:min(len(reply), 16)])
		}
		return nil
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply := make([]byte, msgSize)
			for !stop.Load() {
				if err := one(reply); err != nil {
					if stop.Load() || ctx.Err() != nil {
						return
					}
					errs.add(err)
					// Back off a little: a refused or exhausted-port dial fails fast and
					// would otherwise spin.
					time.Sleep(time.Millisecond)
					continue
				}
				done.Add(1)
			}
		}()
	}
	w, err := measure(ctx, o, done.Load)
	stop.Store(true)
	wg.Wait()
	w.Errors, w.ErrText = errs.n.Load(), errs.first
	return w, err
}
