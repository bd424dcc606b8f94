package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mosnlite/mosnlite/test/framework"
)

// The gRPC streaming tests: grpc-go client → mosnlite (h2c both sides) → grpc-go server,
// with the raw-bytes codec and echoServer type of grpc_test.go. Every test ends with the
// upstream's handlers all returned and the proxy back at its baseline (LeakCheck).

// streamUp is the upstream of the stream tests: a grpc-go server whose accepted
// connections can be dropped (so the proxy's pooled upstream connections end before a
// leak check), counting its running handlers.
type streamUp struct {
	addr   string
	active atomic.Int64  // handlers running
	calls  atomic.Int64  // handlers started
	poured atomic.Int64  // bytes Pour sent
	sunk   atomic.Int64  // bytes Sink read
	gate   chan struct{} // Sink waits for it after the first message

	mu    sync.Mutex
	conns []net.Conn
	ended map[string]streamEnd // Hold handlers by tag: when and how they ended
}

type streamEnd struct {
	at  time.Time
	err error
}

func (u *streamUp) drop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.conns {
		c.Close()
	}
	u.conns = nil
}

func (u *streamUp) ending(tag string) (streamEnd, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.ended[tag]
	return e, ok
}

type trackListener struct {
	net.Listener
	u *streamUp
}

func (l trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.u.mu.Lock()
		l.u.conns = append(l.u.conns, c)
		l.u.mu.Unlock()
	}
	return c, err
}

// tracked wraps a handler so the upstream counts it while it runs.
func tracked(h func(u *streamUp, st grpc.ServerStream) error) grpc.StreamHandler {
	return func(srv any, st grpc.ServerStream) error {
		u := srv.(*streamUp)
		u.calls.Add(1)
		u.active.Add(1)
		defer u.active.Add(-1)
		return h(u, st)
	}
}

// echoSum answers each message m with sha256(m) followed by m, in order.
func echoSum(_ *streamUp, st grpc.ServerStream) error {
	for {
		var in []byte
		if err := st.RecvMsg(&in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		sum := sha256.Sum256(in)
		out := append(sum[:], in...)
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
}

// pourPattern is the byte source of Pour's messages.
var pourPattern = func() []byte {
	b := make([]byte, 512<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// pourMsg is Pour's message i of size n: i (8 bytes) then pourPattern from i%4093.
func pourMsg(dst []byte, i, n int) []byte {
	dst = append(dst[:0], pourPattern[i%4093:i%4093+n]...)
	binary.BigEndian.PutUint64(dst, uint64(i))
	return dst
}

// pour reads a request (total bytes, message size; 8 bytes each) and sends total bytes
// in messages of that size (pourMsg).
func pour(u *streamUp, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	if len(in) != 16 {
		return status.Error(codes.InvalidArgument, "want 16 bytes")
	}
	total, size := int(binary.BigEndian.Uint64(in)), int(binary.BigEndian.Uint64(in[8:]))
	for i := 0; total > 0; i++ {
		// A new buffer each time: grpc-go may still hold a sent message after SendMsg.
		out := pourMsg(nil, i, min(size, total))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
		total -= len(out)
		u.poured.Add(int64(len(out)))
	}
	return nil
}

const failMessage = "stopped mid-stream: 50% done, ünïcode, \"quotes\" and\na newline"

var failBlob = []byte{0, 1, 2, 0xfe, 0xff, '\n', ':'}

// failBig is a 20 KiB trailer value: the trailer block spans CONTINUATION frames.
var failBig = strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 20<<10/36)

// failMid reads "n" (decimal), sends a header, n messages, trailers and an ABORTED status.
// The client keeps its side open.
func failMid(_ *streamUp, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	n, _ := strconv.Atoi(string(in))
	if err := st.SendHeader(metadata.Pairs("x-head", "h-"+string(in))); err != nil {
		return err
	}
	for i := range n {
		out := []byte(fmt.Sprintf("m%d", i))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
	st.SetTrailer(metadata.MD{"x-reason": {"mid-stream"}, "x-multi": {"a", "b"}, "x-blob-bin": {string(failBlob)}, "x-big": {failBig}})
	return status.Error(codes.Aborted, failMessage)
}

// hold reads a tag and sends a small message every 5 ms until its call ends, recording
// when it saw the end.
func hold(u *streamUp, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	tag := string(in)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	end := func(err error) error {
		u.mu.Lock()
		u.ended[tag] = streamEnd{time.Now(), err}
		u.mu.Unlock()
		return err
	}
	for i := 0; ; i++ {
		select {
		case <-st.Context().Done():
			return end(st.Context().Err())
		case <-tick.C:
		}
		out := []byte(fmt.Sprintf("%s-%d", tag, i))
		if err := st.SendMsg(&out); err != nil {
			return end(err)
		}
		if i > 20000 {
			return end(errors.New("never cancelled"))
		}
	}
}

// sink reads a first message, waits for the test to open the gate, then reads the rest
// and answers with the number of bytes it read in all.
func sink(u *streamUp, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	n := len(in)
	select {
	case <-u.gate:
	case <-st.Context().Done():
		return st.Context().Err()
	}
	for {
		err := st.RecvMsg(&in)
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		n += len(in)
		u.sunk.Add(int64(len(in)))
	}
	out := []byte(strconv.Itoa(n))
	return st.SendMsg(&out)
}

// tail counts the messages until the client's half-close, then sends the number of
// messages the first one asked for and ends with OK and a trailer.
func tail(_ *streamUp, st grpc.ServerStream) error {
	got, n := 0, 0
	for {
		var in []byte
		err := st.RecvMsg(&in)
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		if got == 0 {
			n, _ = strconv.Atoi(string(in))
		}
		got++
	}
	for i := range n {
		out := []byte(fmt.Sprintf("after-%d", i))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
	st.SetTrailer(metadata.Pairs("x-got", strconv.Itoa(got)))
	return nil
}

// early reads one message, answers three and ends ("ok" asks for OK, anything else for
// FAILED_PRECONDITION) without reading what the client sends after it; "refuse..." gets
// PERMISSION_DENIED at once, with no message.
func early(_ *streamUp, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	if bytes.HasPrefix(in, []byte("refuse")) {
		// Nothing sent yet: grpc-go answers Trailers-Only (one HEADERS with END_STREAM).
		st.SetTrailer(metadata.Pairs("x-early", "refused"))
		return status.Error(codes.PermissionDenied, "refused: "+string(in))
	}
	for i := range 3 {
		out := []byte(fmt.Sprintf("early-%d", i))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
	st.SetTrailer(metadata.Pairs("x-early", "done"))
	if bytes.HasPrefix(in, []byte("ok")) {
		return nil
	}
	return status.Error(codes.FailedPrecondition, "enough")
}

var streamDesc = grpc.ServiceDesc{
	ServiceName: "mosnlite.test.Stream",
	HandlerType: (*echoServer)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "EchoSum", Handler: tracked(echoSum), ClientStreams: true, ServerStreams: true},
		{StreamName: "Pour", Handler: tracked(pour), ServerStreams: true},
		{StreamName: "Fail", Handler: tracked(failMid), ClientStreams: true, ServerStreams: true},
		{StreamName: "Hold", Handler: tracked(hold), ClientStreams: true, ServerStreams: true},
		{StreamName: "Tail", Handler: tracked(tail), ClientStreams: true, ServerStreams: true},
		{StreamName: "Early", Handler: tracked(early), ClientStreams: true, ServerStreams: true},
		{StreamName: "Sink", Handler: tracked(sink), ClientStreams: true},
	},
}

var bidiDesc = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

// streamRig is a proxy (with an admin endpoint) in front of a streamUp, warmed up, with a
// leak check baseline taken. Its routes are the ones given, then /mosnlite.test.Stream/.
type streamRig struct {
	up   *streamUp
	srv  *grpc.Server
	p    *framework.Proxy
	addr string
	lc   *framework.LeakCheck
}

func startStreamRig(t *testing.T, routes ...any) *streamRig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &streamUp{addr: ln.Addr().String(), ended: map[string]streamEnd{}, gate: make(chan struct{})}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&streamDesc, up)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(trackListener{ln, up}) }()
	t.Cleanup(func() { srv.Stop(); <-served })

	addr := framework.FreePort(t)
	p := framework.StartProxy(t, framework.WithAdmin(t, httpProxyConfig(addr, "Http2", "Http2",
		append(routes, routeTo("/mosnlite.test.Stream/", map[string]any{"timeout": "20s"})), up.addr)))

	// Warm-up: the pools' lazy goroutines start before the baseline.
	cc := dialRawGRPC(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := echoSumRun(ctx, cc, 1, 20, true); err != nil || n != 20 {
		t.Fatalf("warm-up: %d messages, %v", n, err)
	}
	cc.Close()
	r := &streamRig{up: up, srv: srv, p: p, addr: addr}
	r.settle(t, "warm-up")
	r.lc = framework.NewLeakCheck(t, p)
	return r
}

// settle waits for the upstream's handlers to return, then drops its connections.
func (r *streamRig) settle(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.up.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("%s: %d upstream handlers still running after 5s", what, r.up.active.Load())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.up.drop()
}

// finish closes the clients (the caller did), checks the handlers returned and the
// proxy is back at its baseline.
func (r *streamRig) finish(t *testing.T) {
	t.Helper()
	r.settle(t, "end")
	r.lc.Check(t)
}

// streamMsg is message i of stream s: random bytes of a random size (1 B to 256 KiB,
// mostly small), a function of (seed, s, i), starting with s and i when it has room.
func streamMsg(seed uint64, s, i int) []byte {
	rng := rand.New(rand.NewPCG(seed^uint64(s)<<32, uint64(i)))
	var n int
	switch x := rng.IntN(100); {
	case x < 79:
		n = 1 + rng.IntN(1024)
	case x < 99:
		n = 1 + rng.IntN(8<<10)
	default:
		n = 1 + rng.IntN(256<<10)
	}
	off := rng.IntN(len(pourPattern) - n)
	b := append([]byte(nil), pourPattern[off:off+n]...)
	if n >= 8 {
		binary.BigEndian.PutUint32(b, uint32(s))
		binary.BigEndian.PutUint32(b[4:], uint32(i))
	}
	return b
}

// checkSum checks that got is EchoSum's answer to want.
func checkSum(got, want []byte) error {
	sum := sha256.Sum256(want)
	if len(got) != len(want)+32 || !bytes.Equal(got[:32], sum[:]) || !bytes.Equal(got[32:], want) {
		return fmt.Errorf("answer of %d bytes to a message of %d: garbled", len(got), len(want))
	}
	return nil
}

// echoSumRun runs one EchoSum stream of n messages (streamMsg(seed, s, i)): full duplex
// (a sender goroutine) or lockstep. It returns the number of answers checked.
func echoSumRun(ctx context.Context, cc *grpc.ClientConn, s, n int, lockstep bool) (int, error) {
	const seed = 0x5eed
	return echoSumSeed(ctx, cc, seed, s, n, lockstep, nil)
}

// echoSumSeed is echoSumRun with a seed, adding the bytes sent to sent when not nil.
func echoSumSeed(ctx context.Context, cc *grpc.ClientConn, seed uint64, s, n int, lockstep bool, sent *atomic.Int64) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := cc.NewStream(ctx, bidiDesc, "/mosnlite.test.Stream/EchoSum")
	if err != nil {
		return 0, err
	}
	sendErr := make(chan error, 1)
	send := func(i int) error {
		m := streamMsg(seed, s, i)
		if err := cs.SendMsg(&m); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if sent != nil {
			sent.Add(int64(len(m)))
		}
		return nil
	}
	if !lockstep {
		go func() {
			for i := range n {
				if err := send(i); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- cs.CloseSend()
		}()
	}
	for i := range n {
		if lockstep {
			if err := send(i); err != nil {
				return i, err
			}
		}
		var got []byte
		if err := cs.RecvMsg(&got); err != nil {
			return i, fmt.Errorf("recv %d: %w", i, err)
		}
		if err := checkSum(got, streamMsg(seed, s, i)); err != nil {
			return i, fmt.Errorf("message %d: %w", i, err)
		}
	}
	if lockstep {
		if err := cs.CloseSend(); err != nil {
			return n, err
		}
	} else if err := <-sendErr; err != nil {
		return n, err
	}
	var extra []byte
	if err := cs.RecvMsg(&extra); err != io.EOF {
		return n, fmt.Errorf("after %d answers: %v, want the end of the stream (OK)", n, err)
	}
	return n, nil
}

// TestGRPCStreamBidiMany: 20 to 50 bidirectional streams at once on one client
// connection, each of 100 to 1000 messages (lockstep ones: 100 to 300) of 1 B to 256 KiB,
// two thirds full duplex and one third lockstep; the upstream answers each with its
// sha256 and itself. Every answer must come in order and byte-exact.
func TestGRPCStreamBidiMany(t *testing.T) {
	seed := muxSeed(t)
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 1))
	streams := 20 + rng.IntN(31)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		msgs     atomic.Int64
		bytesIn  atomic.Int64
	)
	planned := 0
	for s := range streams {
		n := 100 + rng.IntN(901)
		lockstep := s%3 == 1
		if lockstep {
			n = 100 + rng.IntN(201) // one round trip each
		}
		planned += n
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := echoSumSeed(ctx, cc, seed, s, n, lockstep, &bytesIn)
			msgs.Add(int64(got))
			if err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("stream %d (lockstep %v, %d messages): %v", s, lockstep, n, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d streams, %d/%d messages answered (%d MiB sent)", streams, msgs.Load(), planned, bytesIn.Load()>>20)
	if len(failures) > 0 {
		t.Errorf("%d of %d streams failed (MOSNLITE_MUX_SEED=%d):\n  %s", len(failures), streams, seed, strings.Join(failures, "\n  "))
	}
	cc.Close()
	r.finish(t)
}

// pourStream opens a Pour call of total bytes in messages of size bytes.
func pourStream(ctx context.Context, cc *grpc.ClientConn, total, size int) (grpc.ClientStream, error) {
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/mosnlite.test.Stream/Pour")
	if err != nil {
		return nil, err
	}
	req := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(total)), uint64(size))
	if err := cs.SendMsg(&req); err != nil {
		return nil, err
	}
	return cs, cs.CloseSend()
}

// TestGRPCStreamSlowReader: a client reads a 50 MiB server stream slowly: it stops
// reading for 2 s after the first message, then sleeps between reads. The proxy must
// hold the upstream back (its RSS grows by less than 64 MiB), other streams on the same
// client connection must keep being answered meanwhile, and every byte must arrive.
func TestGRPCStreamSlowReader(t *testing.T) {
	const total, size = 50 << 20, 64 << 10
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	before := rss(t, r.p.Pid())

	var peak atomic.Int64
	sampleDone := make(chan struct{})
	stopSample := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for {
			if v := rss(t, r.p.Pid()); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stopSample:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stopSample); <-sampleDone }()

	// Other streams: lockstep EchoSum streams one after another, until told to stop.
	var others atomic.Int64
	var otherErr atomic.Pointer[error]
	stopOthers := make(chan struct{})
	othersDone := make(chan struct{})
	go func() {
		defer close(othersDone)
		for s := 0; s < 1000; s++ {
			select {
			case <-stopOthers:
				return
			default:
			}
			n, err := echoSumRun(ctx, cc, 100+s, 10, true)
			others.Add(int64(n))
			if err != nil {
				otherErr.Store(&err)
				return
			}
		}
	}()

	cs, err := pourStream(ctx, cc, total, size)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	want := make([]byte, 0, size)
	read := 0
	for i := 0; ; i++ {
		err := cs.RecvMsg(&got)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("message %d (after %d bytes): %v", i, read, err)
		}
		want = pourMsg(want, i, min(size, total-read))
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d (after %d bytes): %d bytes, garbled", i, read, len(got))
		}
		read += len(got)
		switch {
		case i == 0:
			// Stall: the upstream must be held back while other streams go on.
			o := others.Load()
			time.Sleep(2 * time.Second)
			t.Logf("while stalled: upstream sent %d MiB of %d, %d other messages answered, proxy RSS +%d MiB",
				r.up.poured.Load()>>20, total>>20, others.Load()-o, (peak.Load()-before)>>20)
			if others.Load() == o {
				t.Errorf("no other stream was answered while one stream's reader stalled for 2s")
			}
		case i%8 == 0:
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stopOthers)
	<-othersDone
	if read != total {
		t.Errorf("read %d bytes, want %d", read, total)
	}
	if e := otherErr.Load(); e != nil {
		t.Errorf("other streams: %v", *e)
	}
	grew := peak.Load() - before
	t.Logf("%d MiB read slowly; %d messages on other streams; proxy RSS before %d MiB, peak +%d MiB",
		read>>20, others.Load(), before>>20, grew>>20)
	if grew > 64<<20 {
		t.Errorf("proxy RSS grew by %d MiB behind a slow reader (bound 64 MiB): the stream is buffered", grew>>20)
	}
	cc.Close()
	r.finish(t)
}

// TestGRPCStreamManySlowReaders: 24 server streams of 6 MiB on one client connection
// whose reader stops after the first message until the upstream stops sending (at most
// 4 s), then reads everything. The
// proxy's memory must stay bounded (RSS +64 MiB) while all of them are stalled: each
// stream may be held back by a bounded window, not buffered whole (x/net's default
// upstream window of 4 MiB a stream failed it; pkg/stream/http2.StreamWindow).
func TestGRPCStreamManySlowReaders(t *testing.T) {
	const streams, total, size = 24, 6 << 20, 32 << 10
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	before := rss(t, r.p.Pid())
	css := make([]grpc.ClientStream, streams)
	for i := range css {
		cs, err := pourStream(ctx, cc, total, size)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		if err := cs.RecvMsg(&got); err != nil || !bytes.Equal(got, pourMsg(nil, 0, size)) {
			t.Fatalf("stream %d: first message %d bytes, %v", i, len(got), err)
		}
		css[i] = cs
	}
	// All stalled: wait until the upstream stops getting ahead, sampling the RSS.
	var peak int64
	last := int64(-1)
	for range 40 {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, rss(t, r.p.Pid()))
		if p := r.up.poured.Load(); p == last {
			break
		} else {
			last = p
		}
	}
	peak = max(peak, rss(t, r.p.Pid()))
	t.Logf("%d streams stalled: upstream sent %d MiB of %d, proxy RSS before %d MiB, peak +%d MiB",
		streams, r.up.poured.Load()>>20, streams*total>>20, before>>20, (peak-before)>>20)
	if grew := peak - before; grew > 64<<20 {
		t.Errorf("proxy RSS grew by %d MiB while %d slow readers stalled (bound 64 MiB): %d MiB sent by the upstream are held in the proxy",
			grew>>20, streams, r.up.poured.Load()>>20)
	}
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for s, cs := range css {
		wg.Add(1)
		go func() {
			defer wg.Done()
			read := size
			var got []byte
			for i := 1; ; i++ {
				err := cs.RecvMsg(&got)
				if err == io.EOF {
					break
				}
				if err != nil || !bytes.Equal(got, pourMsg(nil, i, min(size, total-read))) {
					errs <- fmt.Errorf("stream %d message %d: %d bytes, %v", s, i, len(got), err)
					return
				}
				read += len(got)
			}
			if read != total {
				errs <- fmt.Errorf("stream %d: %d bytes, want %d", s, read, total)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cc.Close()
	r.finish(t)
}

// backgroundEcho runs lockstep EchoSum streams one after another on cc until stop is
// closed (at most 500), so a test can check that other streams go on.
type backgroundEcho struct {
	msgs atomic.Int64
	err  atomic.Pointer[error]
	stop chan struct{}
	done chan struct{}
}

func startBackgroundEcho(ctx context.Context, cc *grpc.ClientConn, workers int) *backgroundEcho {
	b := &backgroundEcho{stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := 0; s < 500; s++ {
				select {
				case <-b.stop:
					return
				default:
				}
				n, err := echoSumRun(ctx, cc, 1000*(w+1)+s, 20, s%2 == 0)
				b.msgs.Add(int64(n))
				if err != nil {
					b.err.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(b.done) }()
	return b
}

// end stops the streams and returns the first failure.
func (b *backgroundEcho) end() error {
	close(b.stop)
	<-b.done
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

// holdStream opens a Hold call tagged tag and reads k of its messages.
func holdStream(ctx context.Context, cc *grpc.ClientConn, tag string, k int) (grpc.ClientStream, error) {
	cs, err := cc.NewStream(ctx, bidiDesc, "/mosnlite.test.Stream/Hold")
	if err != nil {
		return nil, err
	}
	in := []byte(tag)
	if err := cs.SendMsg(&in); err != nil {
		return nil, err
	}
	for i := range k {
		var got []byte
		if err := cs.RecvMsg(&got); err != nil || string(got) != fmt.Sprintf("%s-%d", tag, i) {
			return nil, fmt.Errorf("%s message %d: %q %v", tag, i, got, err)
		}
	}
	return cs, nil
}

// TestGRPCStreamCancelAndErrors: while 4 workers run EchoSum streams on the same client
// connection, streams end mid-way every way a call can: the client cancels (the
// upstream's handler must see its context end within 2 s; also while the upstream is
// held by flow control), the server ends with an error status while the client's side
// is open (code, message, header and trailers, binary and 20 KiB ones too, must reach
// the client intact after all its messages; half on a route with retries), and the
// client's deadline passes (the client gets DEADLINE_EXCEEDED, the handler sees the
// end). The other streams must be unaffected.
func TestGRPCStreamCancelAndErrors(t *testing.T) {
	r := startStreamRig(t, routeTo("/retry/", map[string]any{"timeout": "20s", "prefix_rewrite": "/mosnlite.test.Stream/",
		"retry_policy": map[string]any{"retry_on": true, "num_retries": 2}}))
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bg := startBackgroundEcho(ctx, cc, 4)
	const within = 2 * time.Second

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	// Client cancels.
	cancelled := make([]time.Time, 10)
	for i := range cancelled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			tag := fmt.Sprintf("cancel%d", i)
			cs, err := holdStream(sctx, cc, tag, 5+i*3)
			if err != nil {
				errs <- err
				return
			}
			cancelled[i] = time.Now()
			scancel()
			var got []byte
			for range 1000 {
				if err = cs.RecvMsg(&got); err != nil {
					break
				}
			}
			if status.Code(err) != codes.Canceled {
				errs <- fmt.Errorf("%s: after cancel: %v, want CANCELED", tag, err)
			}
		}()
	}
	// Server errors mid-stream, the client's side still open; half of them on a route
	// with retries (the request body goes through the retry buffer).
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/mosnlite.test.Stream/Fail"
			if i%2 == 1 {
				path = "/retry/Fail"
			}
			if err := failVia(ctx, cc, path, i*7); err != nil {
				errs <- fmt.Errorf("%s: %w", path, err)
			}
		}()
	}
	// Client cancels while the upstream is held back by flow control (Pour of 64 MiB,
	// one message read); finish checks that these handlers returned too.
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			cs, err := pourStream(sctx, cc, 64<<20, 64<<10)
			if err != nil {
				errs <- err
				return
			}
			var got []byte
			if err := cs.RecvMsg(&got); err != nil || !bytes.Equal(got, pourMsg(nil, 0, 64<<10)) {
				errs <- fmt.Errorf("pour %d: first message %d bytes, %v", i, len(got), err)
				return
			}
			time.Sleep(300 * time.Millisecond)
			scancel()
			for range 2000 {
				if err = cs.RecvMsg(&got); err != nil {
					break
				}
			}
			if status.Code(err) != codes.Canceled {
				errs <- fmt.Errorf("pour %d: after cancel: %v, want CANCELED", i, err)
			}
		}()
	}
	// Deadlines mid-stream.
	deadlines := make([]time.Time, 5)
	for i := range deadlines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := time.Duration(300+100*i) * time.Millisecond
			deadlines[i] = time.Now().Add(d)
			sctx, scancel := context.WithTimeout(ctx, d)
			defer scancel()
			tag := fmt.Sprintf("deadline%d", i)
			cs, err := holdStream(sctx, cc, tag, 3)
			if err != nil {
				errs <- err
				return
			}
			var got []byte
			n := 3
			for ; n < 100000; n++ {
				if err = cs.RecvMsg(&got); err != nil {
					break
				}
			}
			if status.Code(err) != codes.DeadlineExceeded {
				errs <- fmt.Errorf("%s: after %d messages: %v, want DEADLINE_EXCEEDED", tag, n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each held handler saw its end soon after the client's cancel or deadline.
	check := func(tag string, from time.Time) {
		deadline := from.Add(within + time.Second)
		for {
			e, ok := r.up.ending(tag)
			if ok {
				if late := e.at.Sub(from); late > within {
					t.Errorf("%s: the upstream handler saw the end %v after it (%v)", tag, late, e.err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: the upstream handler had not seen the end %v after it", tag, time.Since(from))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i, at := range cancelled {
		if !at.IsZero() {
			check(fmt.Sprintf("cancel%d", i), at)
		}
	}
	for i, at := range deadlines {
		check(fmt.Sprintf("deadline%d", i), at)
	}
	// The connection still carries streams, and the others were not disturbed.
	if err := failOnce(ctx, cc, 3); err != nil {
		t.Error(err)
	}
	if err := bg.end(); err != nil {
		t.Errorf("other streams: %v", err)
	}
	t.Logf("%d messages on other streams meanwhile; %d upstream calls", bg.msgs.Load(), r.up.calls.Load())
	if bg.msgs.Load() == 0 {
		t.Error("no message on other streams")
	}
	cc.Close()
	r.finish(t)
}

// failOnce runs one Fail call asking for n messages and checks everything the client
// gets: the header, the messages, then ABORTED with its message and trailers.
func failOnce(ctx context.Context, cc *grpc.ClientConn, n int) error {
	return failVia(ctx, cc, "/mosnlite.test.Stream/Fail", n)
}

// failVia is failOnce on method path.
func failVia(ctx context.Context, cc *grpc.ClientConn, path string, n int) error {
	cs, err := cc.NewStream(ctx, bidiDesc, path)
	if err != nil {
		return err
	}
	in := []byte(strconv.Itoa(n))
	if err := cs.SendMsg(&in); err != nil {
		return err
	}
	hdr, err := cs.Header()
	if err != nil || strings.Join(hdr.Get("x-head"), ",") != "h-"+string(in) {
		return fmt.Errorf("fail %d: header %v, %v", n, hdr, err)
	}
	i := 0
	for ; ; i++ {
		var got []byte
		if err = cs.RecvMsg(&got); err != nil {
			break
		}
		if string(got) != fmt.Sprintf("m%d", i) {
			return fmt.Errorf("fail %d: message %d is %q", n, i, got)
		}
	}
	st, _ := status.FromError(err)
	tr := cs.Trailer()
	switch {
	case i != n:
		return fmt.Errorf("fail %d: %d messages then %v", n, i, err)
	case st.Code() != codes.Aborted || st.Message() != failMessage:
		return fmt.Errorf("fail %d: status %v %q, want ABORTED %q", n, st.Code(), st.Message(), failMessage)
	case strings.Join(tr.Get("x-reason"), ",") != "mid-stream" || strings.Join(tr.Get("x-multi"), ",") != "a,b" ||
		strings.Join(tr.Get("x-blob-bin"), ",") != string(failBlob) || strings.Join(tr.Get("x-big"), ",") != failBig:
		return fmt.Errorf("fail %d: trailers %q", n, tr)
	}
	return nil
}

// TestGRPCStreamHalfClose: the two orders a bidirectional call can end in, 20 calls of
// each at once on one client connection.
//   - Tail: the client sends k messages and half-closes; the server then sends m
//     messages and ends OK with a trailer counting what it got.
//   - Early: the server answers the first message with three and ends (OK or
//     FAILED_PRECONDITION, with a trailer) while the client has not half-closed: it
//     sends nothing more, or keeps sending 64 KiB messages. The client must get the
//     three answers and the status, and its sends must end (the stream is over)
//     rather than stall. Ten more are refused at once (Trailers-Only), the client's
//     side open.
func TestGRPCStreamHalfClose(t *testing.T) {
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	var sentAfterEnd atomic.Int64
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := tailOnce(ctx, cc, i*5, i*3); err != nil { // i == 0: an empty request stream
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			n, err := earlyOnce(ctx, cc, i%2 == 0, i%4 < 2)
			sentAfterEnd.Add(int64(n))
			if err != nil {
				errs <- err
			}
		}()
	}
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := refuseOnce(ctx, cc, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d upstream calls; Early clients sent %d messages in all before their sends ended", r.up.calls.Load(), sentAfterEnd.Load())
	// The connection still works.
	if n, err := echoSumRun(ctx, cc, 7, 50, false); err != nil {
		t.Errorf("after: %d messages, %v", n, err)
	}
	cc.Close()
	r.finish(t)
}

// refuseOnce runs an Early call the server refuses at once (Trailers-Only) while the
// client's side stays open.
func refuseOnce(ctx context.Context, cc *grpc.ClientConn, i int) error {
	cs, err := cc.NewStream(ctx, bidiDesc, "/mosnlite.test.Stream/Early")
	if err != nil {
		return err
	}
	in := []byte(fmt.Sprintf("refuse-%d", i))
	if err := cs.SendMsg(&in); err != nil {
		return err
	}
	var got []byte
	err = cs.RecvMsg(&got)
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != "refused: "+string(in) ||
		strings.Join(cs.Trailer().Get("x-early"), ",") != "refused" {
		return fmt.Errorf("refuse %d: %q, %v, trailer x-early %q", i, got, err, cs.Trailer().Get("x-early"))
	}
	return nil
}

// tailOnce runs a Tail call: k messages, half-close, then m answers and OK.
func tailOnce(ctx context.Context, cc *grpc.ClientConn, k, m int) error {
	cs, err := cc.NewStream(ctx, bidiDesc, "/mosnlite.test.Stream/Tail")
	if err != nil {
		return err
	}
	for i := range k {
		b := []byte(strconv.Itoa(m))
		if i > 0 {
			b = bytes.Repeat([]byte{byte(i)}, i*100)
		}
		if err := cs.SendMsg(&b); err != nil {
			return fmt.Errorf("tail %d/%d: send %d: %v", k, m, i, err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	i := 0
	for ; ; i++ {
		var got []byte
		if err = cs.RecvMsg(&got); err != nil {
			break
		}
		if string(got) != fmt.Sprintf("after-%d", i) {
			return fmt.Errorf("tail %d/%d: answer %d is %q", k, m, i, got)
		}
	}
	if err != io.EOF || i != m || strings.Join(cs.Trailer().Get("x-got"), ",") != strconv.Itoa(k) {
		return fmt.Errorf("tail %d/%d: %d answers, then %v, trailer %v", k, m, i, err, cs.Trailer())
	}
	return nil
}

// earlyOnce runs an Early call, sending until the stream ends when keepSending, else
// sending nothing more (and not half-closing); it returns how many messages were sent.
func earlyOnce(ctx context.Context, cc *grpc.ClientConn, ok, keepSending bool) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := cc.NewStream(ctx, bidiDesc, "/mosnlite.test.Stream/Early")
	if err != nil {
		return 0, err
	}
	first := []byte("fail")
	if ok {
		first = []byte("ok")
	}
	if err := cs.SendMsg(&first); err != nil {
		return 0, err
	}
	sent := make(chan int, 1)
	if !keepSending {
		sent <- 0
	}
	go func() {
		if !keepSending {
			return
		}
		// Up to 64 MiB: more than every window on the way holds.
		for i := 1; i <= 1024; i++ {
			b := bytes.Repeat([]byte{byte(i)}, 64<<10)
			if cs.SendMsg(&b) != nil {
				sent <- i
				return
			}
		}
		sent <- -1
	}()
	i := 0
	for ; ; i++ {
		var got []byte
		if err = cs.RecvMsg(&got); err != nil {
			break
		}
		if string(got) != fmt.Sprintf("early-%d", i) {
			return 0, fmt.Errorf("early %v: answer %d is %q", ok, i, got)
		}
	}
	good := status.Code(err) == codes.FailedPrecondition && status.Convert(err).Message() == "enough"
	if ok {
		good = err == io.EOF
	}
	if !good || i != 3 || strings.Join(cs.Trailer().Get("x-early"), ",") != "done" {
		return 0, fmt.Errorf("early %v: %d answers, then %v, trailer x-early %q", ok, i, err, cs.Trailer().Get("x-early"))
	}
	select {
	case n := <-sent:
		if n < 0 {
			return 0, fmt.Errorf("early %v: the client sent 64 MiB on a stream whose server had ended", ok)
		}
		return n, nil
	case <-time.After(5 * time.Second):
		cancel()
		n := <-sent
		return n, fmt.Errorf("early %v: the client's send still blocked 5s after the stream's status arrived (%d messages sent)", ok, n)
	}
}

// TestGRPCStreamSlowUpstreamReader: 6 client streams upload 4 MiB each to an upstream
// that reads their first message and then nothing until the test lets it. While they are
// held, other streams on the same client connection must still be answered (the held
// uploads may not take the whole connection's flow-control window) and the proxy's
// memory must stay bounded; then every upload must arrive whole. (A 1 MiB downstream
// connection window, given back only as streams' bodies are read, failed it: four held
// uploads of 256 KiB windows shut the whole connection.)
func TestGRPCStreamSlowUpstreamReader(t *testing.T) {
	const uploads, total, size = 6, 4 << 20, 32 << 10
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := rss(t, r.p.Pid())
	type result struct {
		s   int
		err error
	}
	results := make(chan result, uploads)
	for s := range uploads {
		go func() {
			cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/mosnlite.test.Stream/Sink")
			if err != nil {
				results <- result{s, err}
				return
			}
			for i := 0; i < total/size; i++ {
				m := pourMsg(nil, i, size)
				if err := cs.SendMsg(&m); err != nil {
					results <- result{s, fmt.Errorf("send %d: %w", i, err)}
					return
				}
			}
			if err := cs.CloseSend(); err != nil {
				results <- result{s, err}
				return
			}
			var got []byte
			if err := cs.RecvMsg(&got); err != nil || string(got) != strconv.Itoa(total) {
				results <- result{s, fmt.Errorf("answer %q, %v; want %d", got, err, total)}
				return
			}
			results <- result{s, nil}
		}()
	}
	// Let the uploads fill every window on their way.
	waitUntil(t, "the held uploads to start", 5*time.Second, func() bool { return r.up.active.Load() >= uploads })
	time.Sleep(time.Second)
	peak := rss(t, r.p.Pid())
	octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
	n, err := echoSumRun(octx, cc, 77, 20, true)
	ocancel()
	if err != nil {
		t.Errorf("while %d uploads were held: another stream got %d answers, then %v", uploads, n, err)
	}
	t.Logf("%d uploads held: proxy RSS before %d MiB, +%d MiB; another stream got %d answers", uploads, before>>20, (peak-before)>>20, n)
	if grew := peak - before; grew > 64<<20 {
		t.Errorf("proxy RSS grew by %d MiB while uploads were held (bound 64 MiB)", grew>>20)
	}
	close(r.up.gate)
	for range uploads {
		if res := <-results; res.err != nil {
			t.Errorf("upload %d: %v", res.s, res.err)
		}
	}
	if got := r.up.sunk.Load() + uploads*size; got != uploads*total {
		t.Errorf("the upstream read %d bytes, want %d", got, uploads*total)
	}
	cc.Close()
	r.finish(t)
}

// TestGRPCStreamUpstreamDeadline: a route caps the deadline the upstream gets at 300 ms
// (max_grpc_timeout); grpc-go's server resets a stream whose deadline passed with
// RST_STREAM(CANCEL). Six server streams that outlive it on one client connection (whose
// own deadline is 10 s) must end with CANCELED (the upstream's reset, passed on) or
// DEADLINE_EXCEEDED, not INTERNAL, after their messages; other streams go on.
func TestGRPCStreamUpstreamDeadline(t *testing.T) {
	r := startStreamRig(t, routeTo("/capped/", map[string]any{
		"timeout": "20s", "max_grpc_timeout": "300ms", "prefix_rewrite": "/mosnlite.test.Stream/"}))
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("capped%d", i)
			start := time.Now()
			cs, err := cc.NewStream(ctx, bidiDesc, "/capped/Hold")
			if err != nil {
				errs <- err
				return
			}
			in := []byte(tag)
			if err := cs.SendMsg(&in); err != nil {
				errs <- err
				return
			}
			n := 0
			for ; n < 100000; n++ {
				var got []byte
				if err = cs.RecvMsg(&got); err != nil {
					break
				}
				if string(got) != fmt.Sprintf("%s-%d", tag, n) {
					errs <- fmt.Errorf("%s: message %d is %q", tag, n, got)
					return
				}
			}
			if c := status.Code(err); n == 0 || c != codes.Canceled && c != codes.DeadlineExceeded {
				errs <- fmt.Errorf("%s: %d messages, then %v; want CANCELED or DEADLINE_EXCEEDED", tag, n, err)
			}
			if took := time.Since(start); took > 3*time.Second {
				errs <- fmt.Errorf("%s: ended after %v; the upstream's deadline was 300ms", tag, took)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 6 {
		waitUntil(t, fmt.Sprintf("capped%d's upstream handler to see its call end", i), 2*time.Second, func() bool {
			_, ok := r.up.ending(fmt.Sprintf("capped%d", i))
			return ok
		})
	}
	if n, err := echoSumRun(ctx, cc, 9, 30, false); err != nil {
		t.Errorf("another stream: %d answers, then %v", n, err)
	}
	cc.Close()
	r.finish(t)
}

// TestGRPCStreamUpstreamGracefulStop: the upstream stops gracefully (GOAWAY, then it waits
// for its calls) while 8 server streams of 8 MiB are being read slowly through the proxy.
// Every stream must still finish whole and OK.
func TestGRPCStreamUpstreamGracefulStop(t *testing.T) {
	const streams, total, size = 8, 8 << 20, 64 << 10
	r := startStreamRig(t)
	cc := dialRawGRPC(t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	started := make(chan struct{}, streams)
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs, err := pourStream(ctx, cc, total, size)
			if err != nil {
				errs <- err
				started <- struct{}{}
				return
			}
			read := 0
			var got []byte
			for i := 0; ; i++ {
				err := cs.RecvMsg(&got)
				if i == 0 {
					started <- struct{}{}
				}
				if err == io.EOF {
					break
				}
				if err != nil || !bytes.Equal(got, pourMsg(nil, i, min(size, total-read))) {
					errs <- fmt.Errorf("stream %d message %d (after %d bytes): %d bytes, %v", s, i, read, len(got), err)
					return
				}
				read += len(got)
				if i%16 == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			if read != total {
				errs <- fmt.Errorf("stream %d: %d bytes, want %d", s, read, total)
			}
		}()
	}
	for range streams {
		<-started
	}
	stopped := make(chan struct{})
	go func() { r.srv.GracefulStop(); close(stopped) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Error("the upstream's graceful stop did not end 5s after its calls did")
	}
	cc.Close()
	r.finish(t)
}

// TestGRPCStreamConnectionLoss: connections die under open streams.
//   - The proxy's upstream connections are cut under 6 Hold streams: each must end
//     with an error within 3 s (not hang), and a new call must then succeed.
//   - A client connection closes under 10 Hold streams: every upstream handler must see
//     its call end within 2 s.
func TestGRPCStreamConnectionLoss(t *testing.T) {
	r := startStreamRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cc := dialRawGRPC(t, r.addr)
	var css []grpc.ClientStream
	for i := range 6 {
		cs, err := holdStream(ctx, cc, fmt.Sprintf("cut%d", i), 3)
		if err != nil {
			t.Fatal(err)
		}
		css = append(css, cs)
	}
	r.up.drop()
	cut := time.Now()
	var ends []string
	for i, cs := range css {
		var err error
		var got []byte
		for range 10000 {
			if err = cs.RecvMsg(&got); err != nil {
				break
			}
		}
		if err == nil || err == io.EOF {
			t.Errorf("cut%d: %v after the upstream connection was cut; want an error", i, err)
		}
		ends = append(ends, status.Code(err).String())
		if took := time.Since(cut); took > 3*time.Second {
			t.Errorf("cut%d: ended %v after the upstream connection was cut", i, took)
		}
	}
	t.Logf("streams whose upstream connection was cut ended with %v", ends)
	if n, err := echoSumRun(ctx, cc, 5, 20, true); err != nil {
		t.Errorf("a call after the cut: %d answers, then %v", n, err)
	}

	cc2 := dialRawGRPC(t, r.addr)
	for i := range 10 {
		if _, err := holdStream(ctx, cc2, fmt.Sprintf("gone%d", i), 2); err != nil {
			t.Fatal(err)
		}
	}
	cc2.Close()
	closed := time.Now()
	for i := range 10 {
		tag := fmt.Sprintf("gone%d", i)
		waitUntil(t, tag+"'s upstream handler to see its client's connection close", 3*time.Second, func() bool {
			_, ok := r.up.ending(tag)
			return ok
		})
		if e, _ := r.up.ending(tag); e.at.Sub(closed) > 2*time.Second {
			t.Errorf("%s: the upstream handler saw the end %v after the client's connection closed", tag, e.at.Sub(closed))
		}
	}
	cc.Close()
	r.finish(t)
}
