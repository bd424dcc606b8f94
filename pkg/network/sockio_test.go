package network

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// pattern is n bytes of a sequence that shows where a byte was lost or moved.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i*7 + seed) % 251)
	}
	return b
}

// TestSockIOCarriesBytes writes more than the socket buffers hold, so writes wait in the
// poller (EAGAIN inside the callback), in single writes and in writev batches of more
// slices than one writev takes, and checks every byte arrives in order on TCP and unix
// sockets; then EOF.
func TestSockIOCarriesBytes(t *testing.T) {
	tc, ts := tcpPair(t)
	uc, us := testutil.Pair(t, "unix")
	for _, tt := range []struct {
		name string
		a, b net.Conn
	}{{"tcp", tc, ts}, {"unix", uc, us}} {
		t.Run(tt.name, func(t *testing.T) {
			// A lost or repeated byte would leave the reader waiting: bound it.
			_ = tt.a.SetDeadline(time.Now().Add(10 * time.Second))
			_ = tt.b.SetDeadline(time.Now().Add(10 * time.Second))
			w, r := NewSockIO(tt.a), NewSockIO(tt.b)
			if runtime.GOOS == "linux" && (!w.raw() || !r.raw()) {
				t.Fatal("plain sockets are not on the raw path")
			}
			one := pattern(3<<20, 1)
			var bufs [][]byte
			var want bytes.Buffer
			want.Write(one)
			for i := range 3000 { // > maxIOV slices, some empty
				p := pattern(i%700, i)
				bufs = append(bufs, p)
				want.Write(p)
			}
			errc := make(chan error, 1)
			go func() {
				if n, err := w.Write(one); err != nil || n != len(one) {
					errc <- errors.Join(err, errors.New("short write"))
					return
				}
				n, err := w.Writev(bufs)
				if err == nil && n != int64(want.Len()-len(one)) {
					err = errors.New("writev: short count")
				}
				if err == nil {
					err = tt.a.(interface{ CloseWrite() error }).CloseWrite()
				}
				errc <- err
			}()
			got, err := io.ReadAll(bufio.NewReaderSize(r, 1000)) // small reads while the writer waits
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("got %d bytes, want %d, or they differ", len(got), want.Len())
			}
			if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Fatalf("read after EOF: %d, %v; want 0, io.EOF", n, err)
			}
		})
	}
}

// TestSockIOErrors: a read deadline, a closed connection and a reset peer give net's
// errors, which callers test with errors.Is.
func TestSockIOErrors(t *testing.T) {
	c, s := tcpPair(t)
	r := NewSockIO(s)
	_ = s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if _, err := r.Read(make([]byte, 8)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a net.Error with Timeout()", err)
	}
	_ = s.SetReadDeadline(time.Time{})

	// A reset: the peer closes with unread data and SO_LINGER 0.
	_ = c.SetLinger(0)
	_, _ = c.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err := r.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
		t.Fatalf("read after the peer's reset: %v, want ECONNRESET", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for err == nil || err == io.EOF {
		if time.Now().After(deadline) {
			t.Fatal("write to a reset peer never failed")
		}
		_, err = r.Write(make([]byte, 1<<16))
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write to a reset peer: %v, want EPIPE or ECONNRESET", err)
	}

	s.Close()
	if _, err := r.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := r.Writev([][]byte{[]byte("a"), []byte("b")}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writev on a closed connection: %v, want net.ErrClosed", err)
	}
}

// A wrapper whose Read serves bytes it holds before the socket's: the raw path would skip
// them, so SockIO must use the wrapper's own Read even though it embeds a *net.TCPConn.
type bufferedConn struct {
	*net.TCPConn
	r io.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func TestSockIOUsesWrappersOwnRead(t *testing.T) {
	c, s := tcpPair(t)
	held := &bufferedConn{TCPConn: s}
	held.r = io.MultiReader(bytes.NewReader([]byte("held ")), s)
	r := NewSockIO(held)
	if r.raw() {
		t.Fatal("a wrapper is on the raw path")
	}
	_, _ = c.Write([]byte("then socket"))
	c.CloseWrite()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "held then socket" {
		t.Fatalf("got %q, %v", got, err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	go func() { _, _ = NewSockIO(p1).Writev([][]byte{[]byte("pi"), []byte("pe")}) }()
	b := make([]byte, 4)
	if _, err := io.ReadFull(p2, b); err != nil || string(b) != "pipe" {
		t.Fatalf("net.Pipe through the fallback: %q, %v", b, err)
	}
}

// TestSockIONoAllocs: a read, a write and a writev on the raw path allocate nothing.
func TestSockIONoAllocs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw path is Linux only")
	}
	c, s := tcpPair(t)
	w, r := NewSockIO(c), NewSockIO(s)
	in := make([]byte, 64)
	out := make([]byte, 64)
	bufs := make([][]byte, 2)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := w.Write(out[:32]); err != nil {
			t.Fatal(err)
		}
		bufs[0], bufs[1] = out[:16], out[16:32]
		if _, err := w.Writev(bufs); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 64; {
			n, err := r.Read(in[got:])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write+writev+read, want 0", allocs)
	}
}
