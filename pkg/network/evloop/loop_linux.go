package evloop

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Supported reports whether this platform has event loops.
const Supported = true

const (
	maxPipes  = 16      // empty splice pipes a loop keeps
	pipeSize  = 1 << 20 // asked for with F_SETPIPE_SZ (the default pipe-max-size)
	maxEvents = 256     // events taken per epoll_wait
	// pollRounds bounds the batches one wake-up takes before the loop parks again (see
	// poll).
	pollRounds = 4
	bufSize    = 64 << 10 // the loop's scratch buffer
	// socketEvents is what every socket registers for: edge-triggered, both directions,
	// and the peer's FIN as its own bit.
	socketEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
)

// Group is a set of loops, one per P by default. Sockets are spread over them by their
// owners (a listener registers with every loop; each loop accepts for itself).
type Group struct {
	loops []*Loop
	once  sync.Once
	wg    sync.WaitGroup
}

// NewGroup starts n loops (n <= 0: GOMAXPROCS). It fails with ErrUnsupported where the
// runtime poller cannot wait on an epoll descriptor.
func NewGroup(n int, log *zap.Logger) (*Group, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if log == nil {
		log = zap.NewNop()
	}
	g := &Group{}
	for i := range n {
		l, err := newLoop(i, log)
		if err != nil {
			for _, o := range g.loops {
				o.closeFDs()
			}
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	for _, l := range g.loops {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			l.run()
		}()
	}
	return g, nil
}

// Loops returns the group's loops (do not modify).
func (g *Group) Loops() []*Loop { return g.loops }

// Close stops every loop: handlers still registered get LoopClosed (if they implement
// Closer) on their loop's goroutine, then the loops exit. Close waits for that.
// Idempotent.
func (g *Group) Close() {
	g.once.Do(func() {
		for _, l := range g.loops {
			l.Post(l.stop)
		}
		g.wg.Wait()
		for _, l := range g.loops {
			l.closeFDs()
		}
	})
}

// Loop is one event loop. Its methods other than Post and ID must be called on its own
// goroutine (from a handler, a timer or a posted function).
type Loop struct {
	id     int
	log    *zap.Logger
	epfd   int
	wakeFD int // eventfd: Post's doorbell
	file   *os.File
	rc     syscall.RawConn
	events []unix.EpollEvent
	pollFn func(fd uintptr) bool

	slots []slot
	free  []uint32
	live  int

	now    int64
	timers timerHeap
	armed  int64 // the read deadline set on file (loop clock); 0: none

	mu     sync.Mutex
	posted []func()
	run2   []func() // posted functions being run (the other half of a double buffer)
	rung   atomic.Bool

	pipes [][2]int // empty splice pipes kept for reuse (at most maxPipes)

	parks   uint64 // times the loop parked in the runtime poller (tests read it on the loop)
	stopped bool
	closed  bool // under mu: Post drops functions once the loop stopped
	// Buf is scratch space for handlers: valid only until the handler returns.
	Buf []byte
}

type slot struct {
	h   Handler
	gen uint32
}

func newLoop(id int, log *zap.Logger) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	l := &Loop{id: id, log: log, epfd: epfd, wakeFD: wfd, events: make([]unix.EpollEvent, maxEvents),
		Buf: make([]byte, bufSize), slots: make([]slot, 1, 64)} // slot 0 is the doorbell
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("evloop: epoll_ctl(eventfd): %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("evloop: %w", err)
	}
	// os.NewFile registers a non-blocking descriptor with the runtime poller; an epoll
	// descriptor is readable while it has events ready, so the loop's goroutine can park
	// there. A poller that refused it leaves the file without deadlines: unsupported.
	l.file = os.NewFile(uintptr(epfd), "evloop")
	if err := l.file.SetReadDeadline(time.Time{}); err != nil {
		l.file = nil
		l.closeFDs()
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	rc, err := l.file.SyscallConn()
	if err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	l.rc = rc
	l.pollFn = l.poll
	l.now = Mono()
	return l, nil
}

func (l *Loop) closeFDs() {
	if l.file != nil {
		l.file.Close() // closes epfd
		l.file = nil
	} else if l.epfd >= 0 {
		unix.Close(l.epfd)
	}
	l.epfd = -1
	l.mu.Lock()
	if l.wakeFD >= 0 {
		unix.Close(l.wakeFD)
		l.wakeFD = -1
	}
	l.closed = true
	l.mu.Unlock()
}

// ID is the loop's index in its group.
func (l *Loop) ID() int { return l.id }

// Now is the loop's clock, read once per batch of events (coarse; see Mono).
func (l *Loop) Now() int64 { return l.now }

// Live is the number of registered descriptors.
func (l *Loop) Live() int { return l.live }

// Add registers a socket for edge-triggered readiness both ways (In, Out, RdHup).
func (l *Loop) Add(fd int, h Handler) (Token, error) {
	return l.add(fd, h, socketEvents)
}

// AddListener registers a listening socket for In; exclusive (EPOLLEXCLUSIVE) when other
// loops wait on it too, so one connection wakes one loop.
func (l *Loop) AddListener(fd int, h Handler, exclusive bool) (Token, error) {
	ev := uint32(unix.EPOLLIN | unix.EPOLLET)
	if exclusive {
		ev |= unix.EPOLLEXCLUSIVE
	}
	return l.add(fd, h, ev)
}

func (l *Loop) add(fd int, h Handler, events uint32) (Token, error) {
	if l.stopped {
		return 0, ErrClosed
	}
	var i uint32
	if n := len(l.free); n > 0 {
		i = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		l.slots = append(l.slots, slot{})
		i = uint32(len(l.slots) - 1)
	}
	s := &l.slots[i]
	s.h = h
	tok := Token(uint64(s.gen)<<32 | uint64(i))
	ev := unix.EpollEvent{Events: events}
	putToken(&ev, tok)
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.release(i)
		return 0, fmt.Errorf("evloop: epoll_ctl(ADD, %d): %w", fd, err)
	}
	l.live++
	return tok, nil
}

// Forget drops a registration whose descriptor the caller closes next (close removes it
// from the epoll set; no epoll_ctl needed). Events already taken for it are dropped.
func (l *Loop) Forget(tok Token) {
	i := uint32(tok)
	if int(i) >= len(l.slots) || i == 0 || l.slots[i].gen != uint32(tok>>32) || l.slots[i].h == nil {
		return
	}
	l.release(i)
	l.live--
}

// Remove deletes fd from the epoll set and drops its registration; for descriptors that
// stay open (a listening socket shared with other owners).
func (l *Loop) Remove(fd int, tok Token) error {
	l.Forget(tok)
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("evloop: epoll_ctl(DEL, %d): %w", fd, err)
	}
	return nil
}

func (l *Loop) release(i uint32) {
	l.slots[i] = slot{gen: l.slots[i].gen + 1}
	l.free = append(l.free, i)
}

// GetPipe returns an empty non-blocking pipe (read end, write end) for splice(2): one the
// loop kept, or a new one, sized to pipeSize where the system allows. Return it with
// PutPipe when it is empty again.
func (l *Loop) GetPipe() ([2]int, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return p, fmt.Errorf("evloop: pipe2: %w", err)
	}
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, pipeSize) // over pipe-max-size: keep the default
	return p, nil
}

// PutPipe takes back a pipe from GetPipe. Only an empty pipe may be kept; with dirty set
// (bytes may be left in it) or the loop's store full, it is closed.
func (l *Loop) PutPipe(p [2]int, dirty bool) {
	if dirty || len(l.pipes) >= maxPipes || l.stopped {
		Close(p[0], false)
		Close(p[1], false)
		return
	}
	l.pipes = append(l.pipes, p)
}

// Schedule sets t to fire at when (loop clock), moving it if it is already scheduled.
func (l *Loop) Schedule(t *Timer, when int64) {
	t.when = when
	if t.idx != 0 {
		l.timers.fix(t)
		return
	}
	l.timers.push(t)
}

// Cancel unschedules t (no-op when it is not scheduled).
func (l *Loop) Cancel(t *Timer) {
	if t.idx != 0 {
		l.timers.remove(t)
	}
}

// Post runs f on the loop's goroutine, soon. Safe from any goroutine. It returns false,
// and drops f, once the loop has stopped.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.posted = append(l.posted, f)
	if !l.rung.Swap(true) {
		var one = [8]byte{1}
		_, _ = Write(l.wakeFD, one[:])
	}
	return true
}

// run is the loop's goroutine.
func (l *Loop) run() {
	for !l.stopped {
		err := l.rc.Read(l.pollFn)
		l.now = Mono()
		switch {
		case err == nil:
			// A full batch: more events may be queued. Let other goroutines run first,
			// as a loop that never parks would keep its P.
			runtime.Gosched()
		case errors.Is(err, os.ErrDeadlineExceeded):
			l.armed = expired
		default:
			// The epoll descriptor failed in the poller: nothing more can be waited for.
			// Log and stop, telling the handlers.
			l.log.Error("event loop stopped", zap.Int("loop", l.id), zap.Error(err))
			l.stop()
			return
		}
		l.runTimers()
		l.arm()
	}
}

// poll is the read callback on the epoll descriptor: take the ready events without
// waiting and dispatch them, and look again while the last look found some, up to
// pollRounds looks. It returns false (park in the runtime poller) when a look found
// nothing or the rounds are used up: any later event re-arms the poller's readiness.
// Parking lets the runtime run other goroutines (and poll their sockets) between two
// wake-ups. A full batch returns true: more events may be queued, so run again (after a
// yield, see run).
//
// Why look again: events arrive while a batch is handled (the peers of a loopback
// exchange answer within microseconds), and parking to be woken for them at once costs
// a trip through the scheduler and two more epoll_pwait calls (the runtime's
// non-blocking and blocking polls) where one epoll_wait here finds them.
func (l *Loop) poll(fd uintptr) bool {
	for range pollRounds {
		n, err := epollWait(int(fd), l.events)
		if err != nil {
			return err != unix.EINTR || l.stopped
		}
		if n > 0 {
			l.dispatch(n)
		}
		if n == len(l.events) || l.stopped {
			return true
		}
		if n == 0 {
			break
		}
	}
	// About to park: fire what is due and set the deadline for the next timer.
	l.runTimers()
	l.arm()
	l.parks++
	return l.stopped
}

// dispatch calls the handlers of the first n events.
func (l *Loop) dispatch(n int) {
	l.now = Mono()
	for i := range n {
		if l.stopped {
			return
		}
		ev := &l.events[i]
		tok := getToken(ev)
		idx := uint32(tok)
		if idx == 0 {
			l.doorbell()
			continue
		}
		if int(idx) >= len(l.slots) {
			continue
		}
		s := &l.slots[idx]
		if s.gen != uint32(tok>>32) || s.h == nil {
			continue // closed earlier in this batch
		}
		s.h.OnEvents(ev.Events)
	}
}

// doorbell runs the posted functions.
func (l *Loop) doorbell() {
	var b [8]byte
	_, _ = Read(l.wakeFD, b[:])
	l.rung.Store(false)
	l.mu.Lock()
	l.posted, l.run2 = l.run2[:0], l.posted
	l.mu.Unlock()
	for i, f := range l.run2 {
		l.run2[i] = nil
		f()
	}
}

// runTimers fires the timers due by now.
func (l *Loop) runTimers() {
	for len(l.timers) > 0 {
		t := l.timers[0]
		if t.when > l.now {
			return
		}
		l.timers.remove(t)
		t.H.OnTimer()
	}
}

// arm sets the epoll file's read deadline to the earliest timer, when that is earlier
// than the one set (a later deadline only wakes the loop early, which arm then fixes), and
// clears it when no timer is left.
func (l *Loop) arm() {
	var next int64
	if len(l.timers) > 0 {
		next = max(l.timers[0].when, 1)
	}
	if next == l.armed || (l.armed > 0 && next > l.armed) {
		return
	}
	if next == 0 {
		_ = l.file.SetReadDeadline(time.Time{})
	} else {
		_ = l.file.SetReadDeadline(epoch.Add(time.Duration(next)))
	}
	l.armed = next
}

// expired is armed's value after the deadline passed: the file keeps failing reads until
// its deadline is set again, so arm must set or clear it.
const expired = -1

// stop ends the loop: every registered handler that implements Closer is told.
func (l *Loop) stop() {
	if l.stopped {
		return
	}
	l.stopped = true
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	for i := 1; i < len(l.slots); i++ {
		if c, ok := l.slots[i].h.(Closer); ok {
			c.LoopClosed()
		}
	}
	l.timers = nil
	for _, p := range l.pipes {
		Close(p[0], false)
		Close(p[1], false)
	}
	l.pipes = nil
}

func putToken(ev *unix.EpollEvent, t Token) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func getToken(ev *unix.EpollEvent) Token {
	return Token(uint64(uint32(ev.Pad))<<32 | uint64(uint32(ev.Fd)))
}
