package http2

import (
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
)

// ErrCode is an HTTP/2 error code (RFC 9113 §7).
type ErrCode uint32

// Error codes.
const (
	ErrCodeNo            ErrCode = 0x0
	ErrCodeProtocol      ErrCode = 0x1
	ErrCodeInternal      ErrCode = 0x2
	ErrCodeFlowControl   ErrCode = 0x3
	ErrCodeStreamClosed  ErrCode = 0x5
	ErrCodeFrameSize     ErrCode = 0x6
	ErrCodeRefusedStream ErrCode = 0x7
	ErrCodeCancel        ErrCode = 0x8
	ErrCodeCompression   ErrCode = 0x9
	ErrCodeEnhanceCalm   ErrCode = 0xb
)

// ClientPreface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Defaults for ServerOptions' zero fields.
const (
	DefaultMaxConcurrentStreams = 100
	DefaultStreamWindow         = 256 << 10
	DefaultConnWindow           = 1 << 20
	DefaultPrefaceTimeout       = 10 * time.Second
	DefaultSendStallTimeout     = 5 * time.Minute
	DefaultBodyTimeout          = 60 * time.Second
)

// Errors a ServerStream's methods return.
var (
	// ErrStreamReset: the peer reset the stream, or the connection ended.
	ErrStreamReset = errors.New("http2: stream reset")
	// ErrStreamDone: the stream's response already ended (END_STREAM or RST_STREAM sent).
	ErrStreamDone = errors.New("http2: stream already ended")
	// ErrBodyTimeout: Read waited BodyTimeout for more of the request body; the stream
	// was reset (CANCEL).
	ErrBodyTimeout = errors.New("http2: request body timeout")
	// ErrBodyClosed: the handler closed the request body (CloseRead).
	ErrBodyClosed = errors.New("http2: request body closed")
)

// ServerOptions configures Serve.
type ServerOptions struct {
	MaxConcurrentStreams uint32 // SETTINGS_MAX_CONCURRENT_STREAMS; 0: default (100)
	MaxHeaderListSize    uint32 // request header list limit (431 above it); 0: DefaultMaxHeaderListSize
	StreamWindow         int32  // receive window per stream; 0: default (256 KiB)
	ConnWindow           int32  // receive window of the connection; 0: default (1 MiB)
	// PrefaceTimeout bounds the wait for the client preface; 0: DefaultPrefaceTimeout.
	PrefaceTimeout time.Duration
	// SendStallTimeout bounds how long a response waits for the peer to open a shut
	// flow-control window before the stream is reset (FLOW_CONTROL_ERROR); 0:
	// DefaultSendStallTimeout.
	SendStallTimeout time.Duration
	// BodyTimeout bounds how long Read waits for more of a request body: the gap between
	// two DATA frames of a stream while its handler waits for them (nginx's
	// client_body_timeout). When it passes the stream is reset (CANCEL) and Read returns
	// ErrBodyTimeout, so a client trickling a body cannot hold a stream and its upstream
	// request open. 0: DefaultBodyTimeout; negative: none.
	BodyTimeout time.Duration
	// OnProtocolError is called for each connection or stream error the peer caused
	// (a stalled window or a trickled body included), with a short kind for logs and
	// metrics; from the connection goroutine, a handler's or a timer's, so it must be
	// safe for concurrent use. nil: none.
	OnProtocolError func(kind string)
}

func (o *ServerOptions) norm() {
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if o.StreamWindow <= 0 {
		o.StreamWindow = DefaultStreamWindow
	}
	if o.ConnWindow < defaultWindow {
		o.ConnWindow = DefaultConnWindow
	}
	if o.PrefaceTimeout <= 0 {
		o.PrefaceTimeout = DefaultPrefaceTimeout
	}
	if o.SendStallTimeout <= 0 {
		o.SendStallTimeout = DefaultSendStallTimeout
	}
	if o.BodyTimeout == 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
}

// Handler serves the streams of a server connection.
type Handler interface {
	// ServeStream is called on the connection's goroutine once a request's header block
	// is decoded and valid. It must not block: a handler that waits for anything (an
	// upstream, the request body) continues on another goroutine. Whatever it does, it
	// must end the response (END_STREAM or Reset) and call st.Done exactly once.
	ServeStream(st *ServerStream)
}

// connError is a connection error: GOAWAY with code, then close.
type connError struct {
	code ErrCode
	kind string
}

func (e *connError) Error() string { return "http2: connection error: " + e.kind }

// closedRing remembers recently closed stream ids, so frames on them are told apart from
// frames on never-opened ids (RFC 9113 §5.1).
const closedRing = 64

// ServerConn is the server side of one HTTP/2 connection. Frames are read and decoded on
// the connection's goroutine (Serve); handlers write from any goroutine. All writes go
// through one per-connection mutex that guards the header encoder, the flow-control
// windows and the output buffer, and reach the socket through the network.Conn queue
// (writev batches), never under that mutex.
type ServerConn struct {
	c    *network.Conn
	opts ServerOptions
	h    Handler
	pool *buffer.Pool

	// Reader goroutine only.
	preface     bool
	settings    bool // the peer's first SETTINGS arrived
	maxClientID uint32
	dec         *hpack.Decoder
	hb          headerBlock
	handlers    sync.WaitGroup

	mu        sync.Mutex
	cond      sync.Cond // on mu: a send window opened, a body piece arrived, a stream ended
	streams   map[uint32]*ServerStream
	closed    [closedRing]closedID
	closedAt  int
	out       *buffer.IoBuffer
	enc       *hpack.Encoder
	encBuf    encWriter
	intern    map[string]string
	sendConn  int64 // connection send window
	peerWin   int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame int   // peer's SETTINGS_MAX_FRAME_SIZE
	recvConn  int64 // connection receive window left
	connAck   int64 // consumed connection bytes not yet given back by WINDOW_UPDATE
	goAway    bool  // GOAWAY sent (graceful): no new streams above lastID
	notice    bool  // the shutdown notice (GOAWAY 2^31-1) sent: the final GOAWAY follows
	// shutdownOnStream: Shutdown when the client opens its first stream
	// (ShutdownAfterFirstStream).
	shutdownOnStream bool
	lastID           uint32
	peerAway         bool // the peer sent GOAWAY
	dead             bool // the connection ended

	// Outbound control frames (on mu): see controlLocked.
	queuedBytes int64       // bytes handed to the write queue so far
	ctrl        ctrlRing    // where the control frames not known written end
	ctrlInline  [8]int64    // ctrl's first ring
	dataFrames  int         // DATA frames sent
	ctrlFlood   atomic.Bool // over maxOutboundControlFrames: the reader ends the connection

	// Abuse accounting (reader goroutine).
	opened        int // streams handed to the handler
	peerResets    int // of those, reset by the peer before the response ended
	localResets   int // stream errors this side sent
	empty         int // DATA without payload or END_STREAM, CONTINUATION without payload
	headerBlocks  int // HEADERS frames
	priorities    int // PRIORITY frames
	windowUpdates int // WINDOW_UPDATE frames
}

// Abuse limits (ROBUSTNESS.md cases 10-13). A connection over one is closed with
// GOAWAY(ENHANCE_YOUR_CALM), and counted through OnProtocolError with the limit's kind
// (rapid_reset, too_many_stream_errors, too_many_empty_frames, control_frame_flood,
// priority_flood, window_update_flood); other connections are not affected.
const (
	// More than this many premature resets, when they are also over half the streams
	// opened, is a rapid-reset attack (CVE-2023-44487).
	maxPrematureResets = 100
	// Stream errors this side may send on one connection (CVE-2019-9514).
	maxLocalResets = 1024
	// Frames that carry nothing (CVE-2019-9518).
	maxEmptyFrames = 1024
	// Control frames the peer made us queue (PING and SETTINGS ACKs, RST_STREAM, a
	// WINDOW_UPDATE that answers a DATA frame at once) that are queued and not yet
	// written: a peer that sends PINGs or SETTINGS and does not read the answers
	// (CVE-2019-9512, CVE-2019-9515). Envoy's max_outbound_control_frames default.
	maxOutboundControlFrames = 1000
	// PRIORITY frames: at most this many per HEADERS frame received, plus as many again
	// (CVE-2019-9513 priority churn; we keep no priority tree, but each frame is read and
	// parsed for nothing). Envoy's max_inbound_priority_frames_per_stream default, with
	// its limit of max × (1 + streams).
	maxPriorityPerStream = 100
	// WINDOW_UPDATE frames: at most windowUpdateBase + 2 × (HEADERS frames received +
	// maxWindowUpdatesPerData × DATA frames sent); each wakes every writer waiting for a
	// window. The ratio is Envoy's max_inbound_window_update_frames_per_data_frame_sent
	// default and the formula its ProtocolConstraints'; Envoy's base is 1, ours (our
	// choice) leaves room for clients that send a few updates before any response.
	maxWindowUpdatesPerData = 10
	windowUpdateBase        = 100
)

// ctrlRing holds, oldest first, where in the connection's output (counted in bytes
// since it began) each control frame not known to be written ends.
type ctrlRing struct {
	buf     []int64
	head, n int
}

// controlLocked notes a control frame just appended to out (see maxOutboundControlFrames).
// Once more than the limit are queued and not yet written, it marks the connection for
// the reader, which ends it at the next frame.
func (sc *ServerConn) controlLocked() {
	if sc.out == nil {
		return
	}
	r := &sc.ctrl
	if r.n == len(r.buf) {
		sc.popWrittenLocked()
		if r.n == maxOutboundControlFrames {
			sc.ctrlFlood.Store(true)
			return
		}
		if r.n == len(r.buf) {
			buf := make([]int64, min(2*len(r.buf), maxOutboundControlFrames))
			for i := range r.n {
				buf[i] = r.buf[(r.head+i)%len(r.buf)]
			}
			r.buf, r.head = buf, 0
		}
	}
	r.buf[(r.head+r.n)%len(r.buf)] = sc.queuedBytes + int64(sc.out.Len())
	r.n++
}

// popWrittenLocked forgets the control frames the socket has taken: those that end before
// the bytes still in the write queue. Only this ServerConn queues on c, so what it handed
// to the queue minus what the queue holds has been written.
func (sc *ServerConn) popWrittenLocked() {
	written := sc.queuedBytes - int64(sc.c.Queued())
	r := &sc.ctrl
	for r.n > 0 && r.buf[r.head] <= written {
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
}

// rstLocked appends RST_STREAM(id, code), a control frame.
func (sc *ServerConn) rstLocked(id uint32, code ErrCode) {
	appendRSTStream(sc.out, id, uint32(code))
	sc.controlLocked()
}

type closedID struct {
	id       uint32
	selfRset bool // we reset it: late frames are ignored
}

// encWriter collects one header block from the encoder.
type encWriter struct{ b []byte }

func (w *encWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Serve runs the HTTP/2 server side of c until the connection ends, then waits for every
// stream's handler to call Done. The first bytes must be the client preface. track, when
// not nil, receives the ServerConn before the first frame is read (for Shutdown) and nil
// when it ends.
func Serve(c *network.Conn, pool *buffer.Pool, opts ServerOptions, h Handler, track func(*ServerConn, bool)) error {
	opts.norm()
	sc := &ServerConn{
		c:         c,
		opts:      opts,
		h:         h,
		pool:      pool,
		streams:   make(map[uint32]*ServerStream),
		intern:    make(map[string]string),
		sendConn:  defaultWindow,
		peerWin:   defaultWindow,
		peerFrame: defaultMaxFrameLen,
		recvConn:  int64(opts.ConnWindow),
	}
	sc.cond.L = &sc.mu
	sc.ctrl.buf = sc.ctrlInline[:]
	sc.dec = hpack.NewDecoder(4096, sc.onField)
	// A string over the list limit still decodes (the block is answered 431); one over
	// twice the limit ends the connection, which bounds what a block can make us hold.
	sc.dec.SetMaxStringLength(2 * int(opts.MaxHeaderListSize))
	sc.enc = hpack.NewEncoder(&sc.encBuf)
	sc.out = pool.NewBuffer(512)
	appendSettings(sc.out, []setting{
		{settingMaxConcurrentStreams, opts.MaxConcurrentStreams},
		{settingInitialWindowSize, uint32(opts.StreamWindow)},
		{settingMaxHeaderListSize, opts.MaxHeaderListSize},
	})
	if opts.ConnWindow > defaultWindow {
		appendWindowUpdate(sc.out, 0, uint32(opts.ConnWindow-defaultWindow))
	}
	if track != nil {
		track(sc, true)
		defer track(sc, false)
	}
	_ = c.Raw().SetReadDeadline(time.Now().Add(opts.PrefaceTimeout))
	err := c.ReadLoop(sc.onData)
	var ce *connError
	switch {
	case errors.As(err, &ce):
		sc.mu.Lock()
		appendGoAway(sc.out, sc.maxClientID, uint32(ce.code), ce.kind)
		sc.unlockFlush()
		_ = c.Flush()
		c.CloseLinger(network.CloseProtocolError, true) // the GOAWAY is read, not lost to a reset
	case errors.Is(err, errGoneAway):
		// Closing with unread bytes would reset the connection: half-close and drain.
		_ = c.Flush()
		c.CloseLinger(network.CloseReason("peer_goaway"), true)
	}
	sc.mu.Lock()
	sc.dead = true
	sc.cond.Broadcast()
	resets := sc.resetAllLocked()
	sc.out.Release()
	sc.out = nil
	sc.mu.Unlock()
	runHooks(resets)
	c.Close("")
	sc.handlers.Wait()
	if ce != nil || errors.Is(err, errGoneAway) {
		return nil
	}
	return err
}

var errGoneAway = errors.New("http2: connection drained")

// Conn returns the network connection.
func (sc *ServerConn) Conn() *network.Conn { return sc.c }

// Shutdown starts a graceful close in two steps (RFC 9113 §6.8): a shutdown notice,
// GOAWAY with the last stream id 2^31-1, tells the client to open no more streams while
// the ones it already sent are still served; a PING follows it, and once the client
// acknowledges the PING (a round trip later, so nothing it sent before the notice can
// still be on its way), or after shutdownAckWait, the final GOAWAY names the last stream
// id seen. The connection closes once the streams in flight have ended. Shutdown does
// not wait.
func (sc *ServerConn) Shutdown() {
	sc.mu.Lock()
	if sc.dead || sc.goAway || sc.notice {
		sc.mu.Unlock()
		return
	}
	sc.notice = true
	appendGoAway(sc.out, 1<<31-1, uint32(ErrCodeNo), "")
	appendFrameHeader(sc.out, 8, framePing, 0, 0)
	_, _ = sc.out.Write(shutdownPing[:])
	sc.unlockFlush()
	time.AfterFunc(shutdownAckWait, sc.finishShutdown)
}

// ShutdownAfterFirstStream is Shutdown for a connection the client has not opened a
// stream on yet: the shutdown starts when it opens its first one, which is served. A
// client whose brand-new connection goes away before it could send anything may fail
// that request rather than retry it (Go's HTTP/2 client does). On a connection that has
// had a stream it is Shutdown.
func (sc *ServerConn) ShutdownAfterFirstStream() {
	sc.mu.Lock()
	if sc.maxClientID > 0 {
		sc.mu.Unlock()
		sc.Shutdown()
		return
	}
	sc.shutdownOnStream = true
	sc.mu.Unlock()
}

// shutdownPing is the payload of Shutdown's PING; shutdownAckWait bounds the wait for its
// acknowledgement.
var shutdownPing = [8]byte{'s', 'h', 'u', 't', 'd', 'o', 'w', 'n'}

const shutdownAckWait = time.Second

// finishShutdown is Shutdown's second step: the final GOAWAY; the connection closes now if
// no stream is open.
func (sc *ServerConn) finishShutdown() {
	sc.mu.Lock()
	if sc.dead || sc.goAway {
		sc.mu.Unlock()
		return
	}
	sc.goAway = true
	sc.lastID = sc.maxClientID
	appendGoAway(sc.out, sc.lastID, uint32(ErrCodeNo), "")
	idle := len(sc.streams) == 0
	sc.unlockFlush()
	if idle {
		sc.closeDrained()
	}
}

// closeDrained closes a connection that has no stream left after a GOAWAY, once what
// was written before is on the wire.
func (sc *ServerConn) closeDrained() {
	sc.mu.Lock()
	sc.unlockFlush()
	_ = sc.c.Flush()
	sc.c.Close(network.CloseReason("drain"))
}

// unlockFlush hands the output buffer to the connection's write queue, drops mu and
// writes the queue unless another goroutine is writing it.
func (sc *ServerConn) unlockFlush() {
	if sc.unlockQueue() {
		_ = sc.c.Kick()
	}
}

// unlockFlushAsync is unlockFlush for the reader: the socket write happens on another
// goroutine (network.Conn.KickAsync), so that reading never waits for a peer that is not
// reading, which may be waiting for us to read.
func (sc *ServerConn) unlockFlushAsync() {
	if sc.unlockQueue() {
		sc.c.KickAsync()
	}
}

// unlockQueue hands the output buffer to the connection's write queue and drops mu. It
// reports whether there was anything to write.
func (sc *ServerConn) unlockQueue() bool {
	var b *buffer.IoBuffer
	if sc.out != nil && sc.out.Len() > 0 {
		b = sc.out
		sc.out = sc.pool.NewBuffer(0)
		sc.queuedBytes += int64(b.Len())
		_ = sc.c.Queue(b)
	}
	sc.mu.Unlock()
	return b != nil
}

// onData parses every whole frame in b.
func (sc *ServerConn) onData(b *buffer.IoBuffer) error {
	err := sc.frames(b)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	idleAway := sc.peerAway && len(sc.streams) == 0
	if sc.ctrl.n > 0 {
		sc.popWrittenLocked()
	}
	sc.unlockFlushAsync()
	if sc.c.Queued() > 4*(1<<20) {
		// The peer keeps sending requests we answer at once (431s) without reading the
		// answers; the control frames it makes us send are bounded sooner
		// (maxOutboundControlFrames).
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "write_queue_overflow"})
	}
	if idleAway {
		// The peer went away and nothing is in flight: the frames after its GOAWAY in this
		// batch (a PING) were answered above; Serve closes gracefully.
		return errGoneAway
	}
	return nil
}

func (sc *ServerConn) frames(b *buffer.IoBuffer) error {
	if !sc.preface {
		p := b.Bytes()
		n := min(len(p), len(ClientPreface))
		if string(p[:n]) != ClientPreface[:n] {
			sc.countErr("bad_preface")
			sc.c.CloseLinger(network.CloseProtocolError, true)
			return ErrBadPreface
		}
		if n < len(ClientPreface) {
			return nil
		}
		b.Drain(n)
		sc.preface = true
		_ = sc.c.Raw().SetReadDeadline(time.Time{})
	}
	for b.Len() >= frameHeaderLen {
		p := b.Bytes()
		fh := parseFrameHeader(p)
		if fh.length > defaultMaxFrameLen {
			return sc.protoErr(&connError{ErrCodeFrameSize, "frame_too_large"})
		}
		if len(p) < frameHeaderLen+int(fh.length) {
			return nil
		}
		err := sc.frame(fh, p[frameHeaderLen:frameHeaderLen+int(fh.length)])
		b.Drain(frameHeaderLen + int(fh.length))
		if err != nil {
			return err
		}
		if err := sc.checkAbuse(); err != nil {
			return err
		}
	}
	return nil
}

// checkAbuse ends a connection whose peer went over one of the abuse limits.
func (sc *ServerConn) checkAbuse() error {
	switch {
	case sc.localResets > maxLocalResets:
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "too_many_stream_errors"})
	case sc.empty > maxEmptyFrames:
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "too_many_empty_frames"})
	case sc.ctrlFlood.Load():
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "control_frame_flood"})
	}
	if sc.peerResets > maxPrematureResets && 2*sc.peerResets > sc.opened {
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "rapid_reset"})
	}
	return nil
}

// ErrBadPreface is Serve's error for a connection that did not start with the client
// preface; it was closed after a short linger.
var ErrBadPreface = errors.New("http2: invalid client preface")

func (sc *ServerConn) countErr(kind string) {
	if sc.opts.OnProtocolError != nil {
		sc.opts.OnProtocolError(kind)
	}
}

func (sc *ServerConn) protoErr(e *connError) error {
	sc.countErr(e.kind)
	return e
}

// frame handles one frame. It returns a *connError for a connection error.
func (sc *ServerConn) frame(fh frameHeader, p []byte) error {
	if sc.hb.active && fh.typ != frameContinuation {
		return sc.protoErr(&connError{ErrCodeProtocol, "continuation_expected"})
	}
	if !sc.settings && fh.typ != frameSettings {
		return sc.protoErr(&connError{ErrCodeProtocol, "settings_expected"})
	}
	switch fh.typ {
	case frameData:
		return sc.onDataFrame(fh, p)
	case frameHeaders:
		return sc.onHeaders(fh, p)
	case frameContinuation:
		return sc.onContinuation(fh, p)
	case framePriority:
		sc.priorities++
		if sc.priorities > maxPriorityPerStream*(1+sc.headerBlocks) {
			return sc.protoErr(&connError{ErrCodeEnhanceCalm, "priority_flood"})
		}
		if fh.streamID == 0 {
			return sc.protoErr(&connError{ErrCodeProtocol, "priority_stream_0"})
		}
		if len(p) != 5 {
			sc.streamErr(fh.streamID, ErrCodeFrameSize, "priority_size")
			return nil
		}
		if binary.BigEndian.Uint32(p)&(1<<31-1) == fh.streamID {
			sc.streamErr(fh.streamID, ErrCodeProtocol, "priority_self")
		}
		return nil
	case frameRSTStream:
		return sc.onRST(fh, p)
	case frameSettings:
		return sc.onSettings(fh, p)
	case framePushPromise:
		return sc.protoErr(&connError{ErrCodeProtocol, "push_promise"})
	case framePing:
		if fh.streamID != 0 {
			return sc.protoErr(&connError{ErrCodeProtocol, "ping_stream"})
		}
		if len(p) != 8 {
			return sc.protoErr(&connError{ErrCodeFrameSize, "ping_size"})
		}
		if !fh.has(flagAck) {
			sc.mu.Lock()
			appendFrameHeader(sc.out, 8, framePing, flagAck, 0)
			_, _ = sc.out.Write(p)
			sc.controlLocked()
			sc.mu.Unlock()
		} else if [8]byte(p) == shutdownPing {
			sc.finishShutdown() // the client has seen the shutdown notice
		}
		return nil
	case frameGoAway:
		if fh.streamID != 0 {
			return sc.protoErr(&connError{ErrCodeProtocol, "goaway_stream"})
		}
		if len(p) < 8 {
			return sc.protoErr(&connError{ErrCodeFrameSize, "goaway_size"})
		}
		sc.mu.Lock()
		sc.peerAway = true
		sc.mu.Unlock()
		return nil // onData closes an idle connection after the rest of the batch
	case frameWindowUpdate:
		return sc.onWindowUpdate(fh, p)
	}
	return nil // unknown frame types are ignored (§4.1)
}

// streamErr resets stream id with code (a stream error) and counts it.
func (sc *ServerConn) streamErr(id uint32, code ErrCode, kind string) {
	sc.countErr(kind)
	if code != ErrCodeRefusedStream {
		sc.localResets++
	}
	sc.mu.Lock()
	st := sc.streams[id]
	sc.rstLocked(id, code)
	var hook func()
	if st != nil {
		hook = sc.closeStreamLocked(st, true)
	} else {
		sc.closed[sc.closedAt] = closedID{id, true}
		sc.closedAt = (sc.closedAt + 1) % closedRing
	}
	sc.mu.Unlock()
	if hook != nil {
		hook()
	}
}

// padded strips the padding of a DATA or HEADERS payload.
func padded(fh frameHeader, p []byte) ([]byte, bool) {
	if !fh.has(flagPadded) {
		return p, true
	}
	if len(p) == 0 {
		return nil, false
	}
	pad := int(p[0])
	if pad >= len(p) {
		return nil, false
	}
	return p[1 : len(p)-pad], true
}

// wasClosed reports whether id is a recently closed stream, and whether we reset it.
func (sc *ServerConn) wasClosedLocked(id uint32) (closed, selfReset bool) {
	for _, c := range sc.closed {
		if c.id == id {
			return true, c.selfRset
		}
	}
	return false, false
}

func (sc *ServerConn) onDataFrame(fh frameHeader, p []byte) error {
	id := fh.streamID
	if id == 0 {
		return sc.protoErr(&connError{ErrCodeProtocol, "data_stream_0"})
	}
	data, ok := padded(fh, p)
	if !ok {
		return sc.protoErr(&connError{ErrCodeProtocol, "data_padding"})
	}
	if id > sc.maxClientID {
		return sc.protoErr(&connError{ErrCodeProtocol, "data_idle_stream"})
	}
	n := int64(fh.length)
	sc.mu.Lock()
	if n > sc.recvConn {
		sc.mu.Unlock()
		return sc.protoErr(&connError{ErrCodeFlowControl, "conn_window_exceeded"})
	}
	sc.recvConn -= n
	st := sc.streams[id]
	if st == nil || st.recvDone {
		// Closed, or half-closed (remote): the bytes still count against the connection
		// window; give them back at once.
		sc.giveConnLocked(n, true)
		_, self := sc.wasClosedLocked(id)
		sc.mu.Unlock()
		if st == nil && self {
			return nil // a late frame after our RST_STREAM (§5.1)
		}
		sc.streamErr(id, ErrCodeStreamClosed, "data_closed_stream")
		return nil
	}
	if n > st.recvWin {
		sc.giveConnLocked(n, true)
		sc.mu.Unlock()
		sc.streamErr(id, ErrCodeFlowControl, "stream_window_exceeded")
		return nil
	}
	if n == 0 && !fh.has(flagEndStream) {
		sc.empty++
	}
	st.recvWin -= n
	st.recvd += int64(len(data))
	if st.ContentLength >= 0 && (st.recvd > st.ContentLength || fh.has(flagEndStream) && st.recvd != st.ContentLength) {
		sc.giveConnLocked(n, true)
		sc.mu.Unlock()
		sc.streamErr(id, ErrCodeProtocol, "content_length_mismatch")
		return nil
	}
	if pad := n - int64(len(data)); pad > 0 {
		// Padding is consumed at once.
		sc.giveConnLocked(pad, false)
		st.giveLocked(pad)
	}
	if st.discard {
		sc.giveConnLocked(int64(len(data)), false)
		st.giveLocked(int64(len(data)))
	} else {
		st.body = append(st.body, data...)
	}
	if st.waiting {
		st.lastData = time.Since(bodyEpoch)
	}
	if fh.has(flagEndStream) {
		sc.endRecvLocked(st)
	}
	sc.cond.Broadcast()
	sc.mu.Unlock()
	return nil
}

// endRecvLocked notes the end of st's request; a stream whose response ended too closes.
func (sc *ServerConn) endRecvLocked(st *ServerStream) {
	st.recvDone = true
	if st.sentEnd {
		sc.closeStreamLocked(st, false) // both ends done: no reset hook to run
	}
}

// giveConnLocked returns n consumed bytes to the connection window, sending a
// WINDOW_UPDATE once enough has gathered (or at once with now).
func (sc *ServerConn) giveConnLocked(n int64, now bool) {
	sc.connAck += n
	if sc.connAck > 0 && (now || sc.connAck >= int64(sc.opts.ConnWindow)/4) && sc.out != nil {
		appendWindowUpdate(sc.out, 0, uint32(sc.connAck))
		sc.recvConn += sc.connAck
		sc.connAck = 0
		if now {
			sc.controlLocked() // in answer to a DATA frame that was not consumed
		}
	}
}

func (sc *ServerConn) onRST(fh frameHeader, p []byte) error {
	if len(p) != 4 {
		return sc.protoErr(&connError{ErrCodeFrameSize, "rst_size"})
	}
	if fh.streamID == 0 || fh.streamID > sc.maxClientID {
		return sc.protoErr(&connError{ErrCodeProtocol, "rst_idle_stream"})
	}
	sc.mu.Lock()
	var hook func()
	if st := sc.streams[fh.streamID]; st != nil {
		st.peerReset = true
		if !st.sentEnd {
			sc.peerResets++
		}
		hook = sc.closeStreamLocked(st, false)
	}
	sc.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

func (sc *ServerConn) onSettings(fh frameHeader, p []byte) error {
	if fh.streamID != 0 {
		return sc.protoErr(&connError{ErrCodeProtocol, "settings_stream"})
	}
	if fh.has(flagAck) {
		if len(p) != 0 {
			return sc.protoErr(&connError{ErrCodeFrameSize, "settings_ack_size"})
		}
		return nil
	}
	if len(p)%6 != 0 {
		return sc.protoErr(&connError{ErrCodeFrameSize, "settings_size"})
	}
	sc.settings = true
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for ; len(p) > 0; p = p[6:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case settingHeaderTableSize:
			sc.enc.SetMaxDynamicTableSizeLimit(min(v, 4096))
		case settingEnablePush:
			if v > 1 {
				return sc.protoErr(&connError{ErrCodeProtocol, "settings_enable_push"})
			}
		case settingInitialWindowSize:
			if v > maxWindow {
				return sc.protoErr(&connError{ErrCodeFlowControl, "settings_window"})
			}
			delta := int64(v) - sc.peerWin
			sc.peerWin = int64(v)
			for _, st := range sc.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					return sc.protoErr(&connError{ErrCodeFlowControl, "settings_window_overflow"})
				}
			}
			sc.cond.Broadcast()
		case settingMaxFrameSize:
			if v < minMaxFrameSize || v > maxMaxFrameSize {
				return sc.protoErr(&connError{ErrCodeProtocol, "settings_frame_size"})
			}
			sc.peerFrame = int(v)
		}
	}
	appendFrameHeader(sc.out, 0, frameSettings, flagAck, 0)
	sc.controlLocked()
	return nil
}

func (sc *ServerConn) onWindowUpdate(fh frameHeader, p []byte) error {
	if len(p) != 4 {
		return sc.protoErr(&connError{ErrCodeFrameSize, "window_update_size"})
	}
	incr := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
	sc.windowUpdates++
	if sc.windowUpdates > windowUpdateBase+2*sc.headerBlocks && sc.windowUpdateFlood() {
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "window_update_flood"})
	}
	if fh.streamID == 0 {
		if incr == 0 {
			return sc.protoErr(&connError{ErrCodeProtocol, "window_update_zero"})
		}
		sc.mu.Lock()
		sc.sendConn += incr
		over := sc.sendConn > maxWindow
		sc.cond.Broadcast()
		sc.mu.Unlock()
		if over {
			return sc.protoErr(&connError{ErrCodeFlowControl, "conn_window_overflow"})
		}
		return nil
	}
	if fh.streamID > sc.maxClientID {
		return sc.protoErr(&connError{ErrCodeProtocol, "window_update_idle_stream"})
	}
	sc.mu.Lock()
	st := sc.streams[fh.streamID]
	if st == nil {
		sc.mu.Unlock()
		return nil // closed: a late update
	}
	if incr == 0 {
		sc.mu.Unlock()
		sc.streamErr(fh.streamID, ErrCodeProtocol, "window_update_zero")
		return nil
	}
	st.sendWin += incr
	over := st.sendWin > maxWindow
	sc.cond.Broadcast()
	sc.mu.Unlock()
	if over {
		sc.streamErr(fh.streamID, ErrCodeFlowControl, "stream_window_overflow")
	}
	return nil
}

// windowUpdateFlood reports whether the peer sent more WINDOW_UPDATE frames than the
// DATA frames we sent justify (see maxWindowUpdatesPerData).
func (sc *ServerConn) windowUpdateFlood() bool {
	sc.mu.Lock()
	data := sc.dataFrames
	sc.mu.Unlock()
	return sc.windowUpdates > windowUpdateBase+2*(sc.headerBlocks+maxWindowUpdatesPerData*data)
}

// headerBlock is the state of the header block being decoded (HEADERS + CONTINUATION).
type headerBlock struct {
	active     bool
	id         uint32
	endStream  bool
	trailers   bool          // a trailer block on an open stream
	st         *ServerStream // the stream the block opens or ends (nil: decoded and dropped)
	closedErr  ErrCode       // the block is on a half-closed or closed stream: reset after decoding
	closedConn bool          // ... closed: a connection error
	selfDep    bool
	size       uint32 // header list size so far
	frames     int
	tooLarge   bool
	bad        string // first validation failure
	regular    bool   // a regular field was seen (pseudo-fields must come first)
	trailer    []hpack.HeaderField
}

func (sc *ServerConn) onHeaders(fh frameHeader, p []byte) error {
	sc.headerBlocks++
	id := fh.streamID
	if id == 0 {
		return sc.protoErr(&connError{ErrCodeProtocol, "headers_stream_0"})
	}
	if id%2 == 0 {
		return sc.protoErr(&connError{ErrCodeProtocol, "headers_even_stream"})
	}
	frag, ok := padded(fh, p)
	if !ok {
		return sc.protoErr(&connError{ErrCodeProtocol, "headers_padding"})
	}
	hb := &sc.hb
	*hb = headerBlock{active: true, id: id, endStream: fh.has(flagEndStream), trailer: hb.trailer[:0]}
	if fh.has(flagPriority) {
		if len(frag) < 5 {
			return sc.protoErr(&connError{ErrCodeProtocol, "headers_priority_size"})
		}
		hb.selfDep = binary.BigEndian.Uint32(frag)&(1<<31-1) == id
		frag = frag[5:]
	}
	sc.mu.Lock()
	st := sc.streams[id]
	fresh := st == nil && id > sc.maxClientID
	var closed, self, shutdown bool
	if fresh {
		sc.maxClientID = id // written under mu: Shutdown reads it from other goroutines
		shutdown, sc.shutdownOnStream = sc.shutdownOnStream, false
	} else if st == nil {
		closed, self = sc.wasClosedLocked(id)
	}
	sc.mu.Unlock()
	if shutdown {
		sc.Shutdown() // the stream just opened is below the final GOAWAY's last id
	}
	switch {
	case st != nil && st.recvDone:
		hb.closedErr = ErrCodeStreamClosed
	case st != nil:
		hb.trailers, hb.st = true, st
	case !fresh:
		if !closed {
			return sc.protoErr(&connError{ErrCodeProtocol, "headers_stream_id_reused"})
		}
		if !self {
			// A closed stream (§5.1): a connection error, after the block is decoded.
			hb.closedErr, hb.closedConn = ErrCodeStreamClosed, true
		}
	default:
		hb.st = &ServerStream{sc: sc, id: id, ContentLength: -1}
		hb.st.Header = hb.st.hdrs[:0]
	}
	return sc.headerFragment(fh, frag)
}

func (sc *ServerConn) onContinuation(fh frameHeader, p []byte) error {
	if !sc.hb.active || fh.streamID != sc.hb.id {
		return sc.protoErr(&connError{ErrCodeProtocol, "continuation_unexpected"})
	}
	sc.hb.frames++
	if len(p) == 0 && !fh.has(flagEndHeaders) {
		sc.empty++
	}
	if sc.hb.frames > 256 {
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "continuation_flood"})
	}
	return sc.headerFragment(fh, p)
}

func (sc *ServerConn) headerFragment(fh frameHeader, frag []byte) error {
	if _, err := sc.dec.Write(frag); err != nil {
		return sc.protoErr(&connError{ErrCodeCompression, "hpack"})
	}
	if sc.hb.size > 4*sc.opts.MaxHeaderListSize {
		// Far past the limit (answered 431 up to here): stop decoding a header bomb.
		return sc.protoErr(&connError{ErrCodeEnhanceCalm, "header_list_flood"})
	}
	if !fh.has(flagEndHeaders) {
		return nil
	}
	sc.hb.active = false
	if err := sc.dec.Close(); err != nil {
		return sc.protoErr(&connError{ErrCodeCompression, "hpack"})
	}
	return sc.endHeaders()
}

// onField receives each decoded field of the current block.
func (sc *ServerConn) onField(f hpack.HeaderField) {
	hb := &sc.hb
	hb.size += f.Size()
	if hb.size > sc.opts.MaxHeaderListSize {
		hb.tooLarge = true
		return
	}
	if hb.bad != "" || hb.st == nil && !hb.trailers {
		return
	}
	if !validFieldName(f.Name) {
		hb.bad = "header_name"
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		hb.bad = "header_value"
		return
	}
	if hb.trailers {
		if f.IsPseudo() {
			hb.bad = "trailer_pseudo"
			return
		}
		hb.trailer = append(hb.trailer, f)
		return
	}
	st := hb.st
	if f.IsPseudo() {
		if hb.regular {
			hb.bad = "pseudo_after_regular"
			return
		}
		var dst *string
		switch f.Name {
		case ":method":
			dst = &st.Method
		case ":scheme":
			dst = &st.Scheme
		case ":authority":
			dst = &st.Authority
		case ":path":
			dst = &st.Path
		default:
			hb.bad = "pseudo_unknown"
			return
		}
		if *dst != "" || f.Value == "" && f.Name != ":authority" {
			hb.bad = "pseudo_duplicate_or_empty"
			return
		}
		*dst = f.Value
		return
	}
	hb.regular = true
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		hb.bad = "connection_specific_header"
		return
	case "te":
		if f.Value != "trailers" {
			hb.bad = "te_not_trailers"
			return
		}
	case "content-length":
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil || n < 0 || st.ContentLength >= 0 && st.ContentLength != n {
			hb.bad = "content_length"
			return
		}
		st.ContentLength = n
	case "host":
		if st.Authority == "" {
			st.hostField = f.Value
		}
	}
	st.Header = append(st.Header, f)
}

// validFieldName: a token with no upper-case letters (§8.2.1).
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	if name[0] == ':' {
		name = name[1:]
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return name != ""
}

// endHeaders acts on a decoded header block.
func (sc *ServerConn) endHeaders() error {
	hb := &sc.hb
	id := hb.id
	if hb.closedConn {
		return sc.protoErr(&connError{hb.closedErr, "headers_closed_stream"})
	}
	if hb.closedErr != 0 {
		sc.streamErr(id, hb.closedErr, "headers_half_closed_stream")
		return nil
	}
	if hb.selfDep {
		sc.streamErr(id, ErrCodeProtocol, "priority_self")
		return nil
	}
	if hb.trailers {
		st := hb.st
		if !hb.endStream || hb.bad != "" || hb.tooLarge {
			sc.streamErr(id, ErrCodeProtocol, "trailers_invalid")
			return nil
		}
		sc.mu.Lock()
		st.trailer = append([]hpack.HeaderField(nil), hb.trailer...)
		if st.ContentLength >= 0 && st.recvd != st.ContentLength {
			sc.mu.Unlock()
			sc.streamErr(id, ErrCodeProtocol, "content_length_mismatch")
			return nil
		}
		sc.endRecvLocked(st)
		sc.cond.Broadcast()
		sc.mu.Unlock()
		return nil
	}
	st := hb.st
	if st == nil {
		return nil // a block on a stream we reset: decoded for the table, then dropped
	}
	hb.st = nil
	sc.mu.Lock()
	if sc.goAway && id > sc.lastID || sc.peerAway {
		sc.mu.Unlock()
		return nil // after our GOAWAY: not processed; the client may retry it elsewhere
	}
	if uint32(len(sc.streams)) >= sc.opts.MaxConcurrentStreams {
		sc.mu.Unlock()
		sc.streamErr(id, ErrCodeRefusedStream, "too_many_streams")
		return nil
	}
	sc.mu.Unlock()
	if hb.bad == "" && !hb.tooLarge {
		if st.Method == "CONNECT" {
			if st.Scheme != "" || st.Path != "" || st.Authority == "" {
				hb.bad = "connect_pseudo"
			}
		} else if st.Method == "" || st.Scheme == "" || st.Path == "" {
			hb.bad = "pseudo_missing"
		}
	}
	if hb.bad != "" {
		sc.streamErr(id, ErrCodeProtocol, hb.bad)
		return nil
	}
	if st.Authority == "" {
		st.Authority = st.hostField
	}
	st.recvWin = int64(sc.opts.StreamWindow)
	st.recvDone = hb.endStream
	if hb.endStream && st.ContentLength > 0 {
		sc.streamErr(id, ErrCodeProtocol, "content_length_mismatch")
		return nil
	}
	sc.mu.Lock()
	st.sendWin = sc.peerWin
	sc.streams[id] = st
	if hb.tooLarge {
		// 431 without involving the handler; the request body, if any, is dropped.
		st.discard = true
		sc.writeHeadersLocked(st, 431, true, nil)
		if !st.recvDone {
			sc.rstLocked(id, ErrCodeNo)
			sc.closeStreamLocked(st, true)
		}
		sc.mu.Unlock()
		return nil
	}
	sc.mu.Unlock()
	sc.opened++
	sc.handlers.Add(1)
	sc.h.ServeStream(st)
	return nil
}

// closeStreamLocked removes st (both sides closed, or reset) and gives its unread body
// back to the connection window. It returns st's reset hook to run after mu is dropped,
// or nil.
func (sc *ServerConn) closeStreamLocked(st *ServerStream, selfReset bool) func() {
	if st.closed {
		return nil
	}
	st.closed = true
	if st.bodyTimer != nil {
		st.bodyTimer.Stop()
	}
	delete(sc.streams, st.id)
	sc.closed[sc.closedAt] = closedID{st.id, selfReset}
	sc.closedAt = (sc.closedAt + 1) % closedRing
	if unread := int64(len(st.body) - st.off); unread > 0 {
		sc.giveConnLocked(unread, false)
		st.dropped = true
	}
	st.body, st.off = nil, 0
	sc.cond.Broadcast()
	var hook func()
	if !st.sentEnd || !st.recvDone {
		st.reset = true
		hook = st.onReset
		st.onReset = nil
	}
	if len(sc.streams) == 0 && (sc.goAway || sc.peerAway) && !sc.dead {
		go sc.closeDrained()
	}
	return hook
}

// resetAllLocked ends every stream when the connection ends; it returns their hooks.
func (sc *ServerConn) resetAllLocked() []func() {
	var hooks []func()
	for _, st := range sc.streams {
		if h := sc.closeStreamLocked(st, true); h != nil {
			hooks = append(hooks, h)
		}
	}
	return hooks
}

func runHooks(hs []func()) {
	for _, h := range hs {
		h()
	}
}

// ServerStream is one request/response exchange on a ServerConn. The request head is in
// its exported fields when Handler.ServeStream is called and does not change after.
type ServerStream struct {
	sc *ServerConn
	id uint32

	Method, Scheme, Authority, Path string
	// Header holds the regular request fields in order, names in lower case.
	Header []hpack.HeaderField
	// ContentLength is the content-length field's value, -1 when absent.
	ContentLength int64

	hostField string
	hdrs      [10]hpack.HeaderField

	// Guarded by sc.mu.
	body        []byte // received, not yet read
	off         int
	recvd       int64
	recvWin     int64
	recvAck     int64
	recvDone    bool
	discard     bool
	readClosed  bool // CloseRead was called
	trailer     []hpack.HeaderField
	sendWin     int64
	sentHeaders bool
	sentEnd     bool
	reset       bool // reset by either side, or the connection ended
	dropped     bool // closed with body bytes the handler had not read
	peerReset   bool
	closed      bool
	doneCalled  bool
	onReset     func()
	// The body timeout (ServerOptions.BodyTimeout): when the handler started waiting in
	// Read and when the last DATA arrived (time.Since(bodyEpoch)), the timer that checks
	// them, and whether it fired.
	waitFrom  time.Duration
	lastData  time.Duration
	waiting   bool
	bodyTimer *time.Timer
	timedOut  bool
}

// bodyEpoch anchors the monotonic stamps of the body timeout.
var bodyEpoch = time.Now()

// ID returns the stream id.
func (st *ServerStream) ID() uint32 { return st.id }

// Conn returns the downstream connection.
func (st *ServerStream) Conn() *network.Conn { return st.sc.c }

// HasBody reports whether the request may carry a body: END_STREAM was not on HEADERS.
func (st *ServerStream) HasBody() bool {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	return !st.recvDone || st.off < len(st.body)
}

// OnReset sets fn to be called once, on the connection goroutine, if the stream is
// reset by the peer or the connection ends before the stream does. It returns false (and
// does not keep fn) when that already happened.
func (st *ServerStream) OnReset(fn func()) bool {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	if st.reset {
		return false
	}
	st.onReset = fn
	return true
}

// WasReset reports whether the stream was reset (by either side) or its connection ended
// before the stream did.
func (st *ServerStream) WasReset() bool {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	return st.reset
}

// Read reads the request body. It returns io.EOF at its end (the trailers, if any, are
// then in Trailer) and ErrStreamReset when the stream was reset.
func (st *ServerStream) Read(p []byte) (int, error) {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for {
		if st.off < len(st.body) {
			n := copy(p, st.body[st.off:])
			st.off += n
			if st.off == len(st.body) {
				st.body, st.off = st.body[:0], 0
			}
			sc.giveConnLocked(int64(n), false)
			st.giveLocked(int64(n))
			if sc.out != nil && sc.out.Len() > 0 {
				sc.unlockFlush()
				sc.mu.Lock()
			}
			return n, nil
		}
		if st.timedOut {
			return 0, ErrBodyTimeout
		}
		if st.readClosed {
			return 0, ErrBodyClosed
		}
		// A body the stream's close dropped unread is cut short, even when its last
		// DATA frame had come: never a clean EOF for it.
		if (st.reset || sc.dead) && (!st.recvDone || st.dropped) {
			return 0, ErrStreamReset
		}
		if st.recvDone {
			return 0, io.EOF
		}
		st.waitLocked()
	}
}

// CloseRead tells the connection the handler reads no more of the request body: a Read
// waiting for it returns ErrBodyClosed, and what is buffered or still arrives goes back
// to the flow-control windows. It does not end the response.
func (st *ServerStream) CloseRead() {
	sc := st.sc
	sc.mu.Lock()
	if st.readClosed {
		sc.mu.Unlock()
		return
	}
	st.readClosed, st.discard = true, true
	if unread := int64(len(st.body) - st.off); unread > 0 {
		sc.giveConnLocked(unread, false)
		st.giveLocked(unread)
	}
	st.body, st.off = st.body[:0], 0
	sc.cond.Broadcast()
	sc.unlockFlush()
}

// waitLocked waits for the connection's next event, with the body timeout armed.
func (st *ServerStream) waitLocked() {
	sc := st.sc
	if d := sc.opts.BodyTimeout; d > 0 && !st.waiting {
		st.waiting, st.waitFrom = true, time.Since(bodyEpoch)
		if st.bodyTimer == nil {
			st.bodyTimer = time.AfterFunc(d, st.checkBody)
		} else {
			st.bodyTimer.Reset(d)
		}
	}
	sc.cond.Wait()
	if st.waiting {
		st.waiting = false
		st.bodyTimer.Stop()
	}
}

// checkBody runs when the body timer fires: a handler still waiting with no DATA for
// BodyTimeout has its stream reset; otherwise the timer is set for the rest.
func (st *ServerStream) checkBody() {
	sc := st.sc
	sc.mu.Lock()
	if !st.waiting || st.closed || sc.dead {
		sc.mu.Unlock()
		return
	}
	d := sc.opts.BodyTimeout
	if quiet := time.Since(bodyEpoch) - max(st.waitFrom, st.lastData); quiet < d {
		st.bodyTimer.Reset(d - quiet)
		sc.mu.Unlock()
		return
	}
	st.timedOut = true
	sc.rstLocked(st.id, ErrCodeCancel)
	st.onReset = nil // the handler learns it from Read
	sc.closeStreamLocked(st, true)
	sc.unlockFlush()
	sc.countErr("request_body_timeout")
}

// giveLocked returns n consumed bytes to the stream's receive window.
func (st *ServerStream) giveLocked(n int64) {
	st.recvAck += n
	sc := st.sc
	if !st.recvDone && !st.closed && st.recvAck >= int64(sc.opts.StreamWindow)/4 && sc.out != nil {
		appendWindowUpdate(sc.out, st.id, uint32(st.recvAck))
		st.recvWin += st.recvAck
		st.recvAck = 0
	}
}

// Trailer returns the request trailers; valid once Read returned io.EOF.
func (st *ServerStream) Trailer() []hpack.HeaderField {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	return st.trailer
}

// FieldWriter encodes the fields of one header block. Names must be lower case;
// connection-specific fields, which HTTP/2 forbids, are dropped.
type FieldWriter struct{ sc *ServerConn }

// Field adds a field. Strings are kept by the encoder's table: they must not alias
// reused memory (see FieldBytes).
func (w FieldWriter) Field(name, value string) {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return
	}
	_ = w.sc.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// FieldBytes adds a field from bytes, lower-casing the name. The strings are interned
// per connection, so repeated fields do not allocate.
func (w FieldWriter) FieldBytes(name, value []byte) {
	var lb [64]byte
	if len(name) <= len(lb) {
		l := lb[:len(name)]
		for i, c := range name {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			l[i] = c
		}
		name = l
	}
	w.Field(w.sc.internLocked(name), w.sc.internLocked(value))
}

// internLocked returns b as a string shared across the connection's header blocks.
func (sc *ServerConn) internLocked(b []byte) string {
	if s, ok := sc.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(s) > 256 {
		return s
	}
	if len(sc.intern) >= 256 {
		clear(sc.intern)
	}
	sc.intern[s] = s
	return s
}

// writableLocked reports why st cannot send, or nil.
func (st *ServerStream) writableLocked() error {
	switch {
	case st.sentEnd && !st.reset:
		return ErrStreamDone
	case st.reset || st.sc.dead:
		return ErrStreamReset
	}
	return nil
}

// WriteHeaders sends the response head: :status, then the fields fn adds (fn may be
// nil). With end the response ends here.
func (st *ServerStream) WriteHeaders(status int, end bool, fn func(FieldWriter)) error {
	sc := st.sc
	sc.mu.Lock()
	if err := st.writableLocked(); err != nil {
		sc.mu.Unlock()
		return err
	}
	hook := sc.writeHeadersLocked(st, status, end, fn)
	sc.unlockFlush()
	if hook != nil {
		hook()
	}
	return nil
}

// WriteResponse sends the response head and a first body piece together, in one write
// when the send windows allow; with end the response ends with p. The body of an answer
// to HEAD is dropped, here and in WriteData.
func (st *ServerStream) WriteResponse(status int, fn func(FieldWriter), p []byte, end bool) error {
	if len(p) == 0 || st.Method == "HEAD" {
		return st.WriteHeaders(status, end, fn)
	}
	sc := st.sc
	sc.mu.Lock()
	if err := st.writableLocked(); err != nil {
		sc.mu.Unlock()
		return err
	}
	sc.writeHeadersLocked(st, status, false, fn)
	n := int64(len(p))
	if n > st.sendWin || n > sc.sendConn || len(p) > sc.peerFrame {
		sc.unlockFlush()
		return st.WriteData(p, end)
	}
	flags := uint8(0)
	if end {
		flags = flagEndStream
	}
	appendFrameHeader(sc.out, len(p), frameData, flags, st.id)
	_, _ = sc.out.Write(p)
	sc.dataFrames++
	st.sendWin -= n
	sc.sendConn -= n
	return sc.unlockSent(st, end)
}

var statusText [600]string

func init() {
	for i := 100; i < len(statusText); i++ {
		statusText[i] = strconv.Itoa(i)
	}
}

func (sc *ServerConn) writeHeadersLocked(st *ServerStream, status int, end bool, fn func(FieldWriter)) func() {
	sc.encBuf.b = sc.encBuf.b[:0]
	s := ""
	if status >= 100 && status < len(statusText) {
		s = statusText[status]
	} else {
		s = strconv.Itoa(status)
	}
	_ = sc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: s})
	if fn != nil {
		fn(FieldWriter{sc})
	}
	sc.writeBlockLocked(st.id, end)
	st.sentHeaders = true
	if end {
		st.sentEnd = true
		if st.recvDone {
			return sc.closeStreamLocked(st, false)
		}
	}
	return nil
}

// writeBlockLocked frames the encoded block as HEADERS and CONTINUATION frames.
func (sc *ServerConn) writeBlockLocked(id uint32, end bool) {
	blk := sc.encBuf.b
	typ, flags := uint8(frameHeaders), uint8(0)
	if end {
		flags = flagEndStream
	}
	for first := true; first || len(blk) > 0; first = false {
		n := min(len(blk), sc.peerFrame)
		f := flags
		if n == len(blk) {
			f |= flagEndHeaders
		}
		appendFrameHeader(sc.out, n, typ, f, id)
		_, _ = sc.out.Write(blk[:n])
		blk = blk[n:]
		typ, flags = frameContinuation, 0
	}
}

// Write sends p as DATA, waiting for flow-control window as needed.
func (st *ServerStream) Write(p []byte) (int, error) {
	if err := st.WriteData(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteData sends p as DATA frames; with end the last frame ends the stream. It waits
// while the stream's or the connection's send window is closed, and while the
// connection's write queue is over its limit.
func (st *ServerStream) WriteData(p []byte, end bool) error {
	if st.Method == "HEAD" {
		p = nil // a HEAD response carries no content (RFC 9110 §9.3.2); END_STREAM still goes
	}
	sc := st.sc
	sc.mu.Lock()
	for {
		if err := st.writableLocked(); err != nil {
			sc.mu.Unlock()
			return err
		}
		n := min(int64(len(p)), st.sendWin, sc.sendConn, int64(sc.peerFrame))
		if n <= 0 && len(p) > 0 {
			sc.unlockFlush()
			sc.mu.Lock()
			if !sc.waitWindowLocked(st) {
				// The peer kept the window shut for SendStallTimeout: the stream is
				// reset rather than held (with its goroutine and upstream) for ever.
				sc.rstLocked(st.id, ErrCodeFlowControl)
				st.onReset = nil
				sc.closeStreamLocked(st, true)
				sc.unlockFlush()
				sc.countErr("send_window_stalled")
				return ErrStreamReset
			}
			continue
		}
		flags := uint8(0)
		last := int(n) == len(p)
		if last && end {
			flags = flagEndStream
		}
		appendFrameHeader(sc.out, int(n), frameData, flags, st.id)
		_, _ = sc.out.Write(p[:n])
		sc.dataFrames++
		st.sendWin -= n
		sc.sendConn -= n
		p = p[n:]
		if last {
			break
		}
	}
	return sc.unlockSent(st, end)
}

// waitWindowLocked waits until st may send DATA again (both send windows open) or cannot
// send at all. It reports false when the windows stayed shut for SendStallTimeout.
func (sc *ServerConn) waitWindowLocked(st *ServerStream) bool {
	if st.sendWin > 0 && sc.sendConn > 0 {
		return true
	}
	deadline := time.Now().Add(sc.opts.SendStallTimeout)
	wake := time.AfterFunc(sc.opts.SendStallTimeout, func() {
		sc.mu.Lock()
		sc.cond.Broadcast()
		sc.mu.Unlock()
	})
	defer wake.Stop()
	for st.sendWin <= 0 || sc.sendConn <= 0 {
		if st.writableLocked() != nil {
			return true // the caller sees why
		}
		if !time.Now().Before(deadline) {
			return false
		}
		sc.cond.Wait()
	}
	return true
}

// unlockSent notes the end of st's response (with end), flushes, drops mu, and waits
// while the connection's write queue is over its limit.
func (sc *ServerConn) unlockSent(st *ServerStream, end bool) error {
	var hook func()
	if end {
		st.sentEnd = true
		if st.recvDone {
			hook = sc.closeStreamLocked(st, false)
		}
	}
	sc.unlockFlush()
	if hook != nil {
		hook()
	}
	return sc.c.WaitWritable()
}

// WriteTrailers ends the response with a trailer block of the fields fn adds.
func (st *ServerStream) WriteTrailers(fn func(FieldWriter)) error {
	sc := st.sc
	sc.mu.Lock()
	if err := st.writableLocked(); err != nil {
		sc.mu.Unlock()
		return err
	}
	sc.encBuf.b = sc.encBuf.b[:0]
	fn(FieldWriter{sc})
	sc.writeBlockLocked(st.id, true)
	return sc.unlockSent(st, true)
}

// Reset sends RST_STREAM with code unless the stream already ended.
func (st *ServerStream) Reset(code ErrCode) {
	sc := st.sc
	sc.mu.Lock()
	if st.closed || sc.dead {
		sc.mu.Unlock()
		return
	}
	sc.rstLocked(st.id, code)
	st.onReset = nil // the handler resets it itself
	sc.closeStreamLocked(st, true)
	sc.unlockFlush()
}

// Done tells the connection the handler no longer uses st. A response left open is
// reset (INTERNAL_ERROR); a request body left unread after a complete response is
// refused with RST_STREAM(NO_ERROR) (RFC 9113 §8.1).
func (st *ServerStream) Done() {
	sc := st.sc
	sc.mu.Lock()
	if st.doneCalled {
		sc.mu.Unlock()
		panic("http2: ServerStream.Done called twice")
	}
	st.doneCalled = true
	if !st.closed && !sc.dead {
		code := ErrCodeInternal
		if st.sentEnd {
			code = ErrCodeNo
		}
		sc.rstLocked(st.id, code)
		st.onReset = nil
		sc.closeStreamLocked(st, true)
		sc.unlockFlush()
	} else {
		sc.mu.Unlock()
	}
	sc.handlers.Done()
}
