package evloop

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestSendRecvWritev(t *testing.T) {
	a, b := socketPair(t)
	if n, err := Send(a, []byte("hello ")); n != 6 || err != nil {
		t.Fatalf("Send = %d, %v", n, err)
	}
	x, y := []byte("wide "), []byte("world")
	iov := []syscall.Iovec{{Base: &x[0]}, {Base: &y[0]}}
	iov[0].SetLen(len(x))
	iov[1].SetLen(len(y))
	if n, err := Writev(a, iov); n != 10 || err != nil {
		t.Fatalf("Writev = %d, %v", n, err)
	}
	buf := make([]byte, 64)
	n, err := Recv(b, buf)
	if err != nil || string(buf[:n]) != "hello wide world" {
		t.Fatalf("Recv = %q, %v", buf[:n], err)
	}
	if _, err := Recv(b, buf); err != unix.EAGAIN {
		t.Fatalf("Recv on a drained socket: %v, want EAGAIN", err)
	}
	if n, err := Recv(b, nil); n != 0 || err != nil {
		t.Fatalf("Recv(nil) = %d, %v", n, err)
	}
	if got := testing.AllocsPerRun(100, func() {
		Writev(a, iov)
		Recv(b, buf)
	}); got != 0 {
		t.Errorf("Writev+Recv allocate %v times", got)
	}
}

// A write to a socket whose peer is gone fails with EPIPE and raises no SIGPIPE (the
// process would see one per write, and with a handler installed for SIGPIPE by anything
// in the process, the signal would be delivered).
func TestSendNoSIGPIPE(t *testing.T) {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGPIPE)
	defer signal.Stop(sig)
	a, b := socketPair(t)
	unix.Close(b)
	if _, err := Send(a, []byte("x")); err != unix.EPIPE {
		t.Fatalf("Send to a closed peer: %v, want EPIPE", err)
	}
	x := []byte("y")
	iov := []syscall.Iovec{{Base: &x[0]}}
	iov[0].SetLen(1)
	if _, err := Writev(a, iov); err != unix.EPIPE {
		t.Fatalf("Writev to a closed peer: %v, want EPIPE", err)
	}
	select {
	case s := <-sig:
		t.Fatalf("got %v", s)
	case <-time.After(50 * time.Millisecond):
	}
}
