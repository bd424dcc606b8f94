package evloop

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newGroup(t *testing.T, n int) *Group {
	t.Helper()
	g, err := NewGroup(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// on runs f on l's goroutine and waits for it.
func on(t *testing.T, l *Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	l.Post(func() { f(); close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("posted function did not run")
	}
}

// reader is a handler that reads its socket until EAGAIN and reports what it read.
type reader struct {
	l      *Loop
	fd     int
	tok    Token
	got    chan string
	closed atomic.Bool
}

func (r *reader) OnEvents(ev uint32) {
	for {
		n, err := unix.Read(r.fd, r.l.Buf)
		if n > 0 {
			r.got <- string(r.l.Buf[:n])
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		r.got <- "<eof>"
		r.l.Forget(r.tok)
		unix.Close(r.fd)
		return
	}
}

func (r *reader) LoopClosed() { r.closed.Store(true); unix.Close(r.fd) }

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

func recv(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return ""
	}
}

// The loop's goroutine parks in the runtime poller and is woken by readiness of a
// registered socket, repeatedly (edge-triggered: each new write is a new edge), and an
// EOF is seen as readable.
func TestLoopDeliversReadiness(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	a, b := socketpair(t)
	defer unix.Close(b)
	r := &reader{l: l, fd: a, got: make(chan string, 16)}
	on(t, l, func() {
		var err error
		if r.tok, err = l.Add(a, r); err != nil {
			t.Error(err)
		}
	})
	for _, msg := range []string{"one", "two", "three"} {
		if _, err := unix.Write(b, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, r.got); got != msg {
			t.Fatalf("read %q, want %q", got, msg)
		}
	}
	unix.Shutdown(b, unix.SHUT_WR)
	if got := recv(t, r.got); got != "<eof>" {
		t.Fatalf("read %q, want EOF", got)
	}
	var live int
	on(t, l, func() { live = l.Live() })
	if live != 0 {
		t.Fatalf("%d registrations left after Forget", live)
	}
}

// handlerFunc is a Handler from a function.
type handlerFunc func(ev uint32)

func (f handlerFunc) OnEvents(ev uint32) { f(ev) }
func (f handlerFunc) LoopClosed()        {}

// An event that becomes ready while the loop handles a batch is handled in the same
// wake-up: the loop looks again before it parks, instead of parking to be woken at once.
func TestLoopLooksAgainBeforeParking(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	a, b := socketpair(t)
	c, d := socketpair(t)
	defer func() {
		for _, fd := range []int{a, b, c, d} {
			unix.Close(fd)
		}
	}()
	parksAtA, parksAtC := make(chan uint64, 1), make(chan uint64, 1)
	on(t, l, func() {
		_, errA := l.Add(a, handlerFunc(func(uint32) {
			var buf [8]byte
			if n, _ := unix.Read(a, buf[:]); n > 0 {
				unix.Write(d, []byte("x")) // c is ready now, during this batch
				parksAtA <- l.parks
			}
		}))
		_, errC := l.Add(c, handlerFunc(func(uint32) {
			var buf [8]byte
			if n, _ := unix.Read(c, buf[:]); n > 0 {
				parksAtC <- l.parks
			}
		}))
		if errA != nil || errC != nil {
			t.Error(errA, errC)
		}
	})
	time.Sleep(10 * time.Millisecond) // let the loop park with nothing ready
	if _, err := unix.Write(b, []byte("go")); err != nil {
		t.Fatal(err)
	}
	var pa, pc uint64
	for _, ch := range []struct {
		p  *uint64
		ch chan uint64
	}{{&pa, parksAtA}, {&pc, parksAtC}} {
		select {
		case *ch.p = <-ch.ch:
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
		}
	}
	if pc != pa {
		t.Fatalf("the loop parked %d time(s) between the two events, want 0", pc-pa)
	}
}

type timerFunc func()

func (f timerFunc) OnTimer() { f() }

// Timers fire in order of their times, a moved timer fires at its new time, a cancelled
// one never, and an idle loop still wakes for them (the deadline on the epoll file).
func TestLoopTimers(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	fired := make(chan int, 8)
	timers := make([]Timer, 4)
	for i := range timers {
		timers[i].H = timerFunc(func() { fired <- i })
	}
	on(t, l, func() {
		now := l.Now()
		l.Schedule(&timers[0], now+int64(60*time.Millisecond))
		l.Schedule(&timers[1], now+int64(20*time.Millisecond))
		l.Schedule(&timers[2], now+int64(40*time.Millisecond))
		l.Schedule(&timers[3], now+int64(30*time.Millisecond))
		l.Schedule(&timers[0], now+int64(10*time.Millisecond)) // moved earlier
		l.Cancel(&timers[3])
	})
	var order []int
	for range 3 {
		select {
		case i := <-fired:
			order = append(order, i)
		case <-time.After(5 * time.Second):
			t.Fatalf("timers fired %v, then nothing", order)
		}
	}
	if want := []int{0, 1, 2}; order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Fatalf("fired in order %v, want %v", order, want)
	}
	select {
	case i := <-fired:
		t.Fatalf("cancelled timer %d fired", i)
	case <-time.After(50 * time.Millisecond):
	}
	on(t, l, func() {
		if timers[0].Scheduled() || timers[3].Scheduled() {
			t.Error("a fired or cancelled timer still reads as scheduled")
		}
	})
}

// A timer scheduled while the loop is parked with no deadline set is still honoured:
// the posted function runs on the loop, which arms the deadline before it parks again.
func TestLoopTimerFromPost(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	fired := make(chan struct{})
	var tm Timer
	tm.H = timerFunc(func() { close(fired) })
	time.Sleep(10 * time.Millisecond) // let the loop park without a deadline
	l.Post(func() { l.Schedule(&tm, l.Now()+int64(5*time.Millisecond)) })
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("timer scheduled from Post never fired")
	}
}

// A registration dropped during a batch gets no more events from that batch, even when
// its descriptor number is reused at once by a new registration.
func TestLoopStaleEventsDropped(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	a, b := socketpair(t)
	defer unix.Close(b)
	r := &reader{l: l, fd: a, got: make(chan string, 16)}
	var tok Token
	on(t, l, func() { tok, _ = l.Add(a, r); r.tok = tok })
	on(t, l, func() {
		l.Forget(tok)
		tok2, err := l.Add(a, r) // same fd, new registration
		if err == nil && tok2 == tok {
			t.Error("a new registration reused the old token")
		}
		l.Forget(tok2)
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, a, nil)
	})
	unix.Close(a)
}

// Closing the group tells registered handlers, stops the loops' goroutines (goleak checks)
// and drops later posts.
func TestGroupClose(t *testing.T) {
	g, err := NewGroup(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketpair(t)
	defer unix.Close(b)
	r := &reader{l: g.Loops()[1], fd: a, got: make(chan string, 1)}
	on(t, g.Loops()[1], func() { r.tok, _ = g.Loops()[1].Add(a, r) })
	g.Close()
	if !r.closed.Load() {
		t.Fatal("handler registered at Close was not told")
	}
	ran := false
	g.Loops()[0].Post(func() { ran = true })
	g.Close()
	if ran {
		t.Fatal("a function posted after Close ran")
	}
}

// Posts from many goroutines all run, each once.
func TestLoopPostConcurrent(t *testing.T) {
	l := newGroup(t, 1).Loops()[0]
	const workers, each = 8, 500
	var n atomic.Int64
	done := make(chan struct{})
	for range workers {
		go func() {
			for range each {
				l.Post(func() {
					if n.Add(1) == workers*each {
						close(done)
					}
				})
			}
		}()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d posts ran", n.Load(), workers*each)
	}
}
