package rpcpeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

// frameReader reads whole bolt frames from a connection with mosnlite's codec. The frame
// it returns aliases its buffer until the next call.
type frameReader struct {
	r          io.Reader
	codec      *bolt.Codec
	buf        []byte
	start, end int
	f          xprotocol.Frame
}

func newFrameReader(r io.Reader, c *bolt.Codec) *frameReader {
	return &frameReader{r: r, codec: c, buf: make([]byte, 64<<10)}
}

func (fr *frameReader) next() (*xprotocol.Frame, error) {
	for {
		if fr.end > fr.start {
			fr.f.Reset()
			n, err := fr.codec.Decode(fr.buf[fr.start:fr.end], &fr.f)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				fr.start += n
				return &fr.f, nil
			}
		}
		if fr.start == fr.end {
			fr.start, fr.end = 0, 0
		}
		if fr.end == len(fr.buf) {
			if fr.start > 0 {
				fr.end = copy(fr.buf, fr.buf[fr.start:fr.end])
				fr.start = 0
			} else {
				if len(fr.buf) >= fr.codec.MaxFrameSize()+64 {
					return nil, errors.New("rpcpeer: bolt: frame over the limit")
				}
				nb := make([]byte, 2*len(fr.buf))
				fr.end = copy(nb, fr.buf[fr.start:fr.end])
				fr.buf, fr.start = nb, 0
			}
		}
		n, err := fr.r.Read(fr.buf[fr.end:])
		fr.end += n
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// BoltServerOptions configure a BoltServer.
type BoltServerOptions struct {
	Addr      string        // listen address; "" picks a free loopback port
	Name      string        // the BoltHeaderServer header of echo responses
	SlowDelay time.Duration // MethodSlow's delay; 0: DefaultSlowDelay
	// Record keeps a copy of every request and one-way frame received (Recorded).
	Record bool
	// Handler, when set, answers requests first: it gets a copy of the raw frame and its
	// decoded view and returns the whole response to write (its id already set), or ok
	// false to fall back to the built-in behaviour.
	Handler func(raw []byte, f *xprotocol.Frame) (resp []byte, ok bool)
}

// BoltServer is a bolt (v1 and v2) server built on mosnlite's bolt codec. It answers
// heartbeats, counts one-ways, and echoes requests: a response of the request's version
// (and ver1, switch, codec, command version), status success, class SofaResponseClass, the
// request's header map plus BoltHeaderServer, and the request's content. Methods (header
// sofa_head_method_name) MethodSlow, MethodClose, MethodFail and MethodError behave as their
// names say.
type BoltServer struct {
	*server
	opts       BoltServerOptions
	Requests   atomic.Int64
	Oneways    atomic.Int64
	Heartbeats atomic.Int64
	Failures   atomic.Int64 // connections ended by a frame the codec refused

	mu       sync.Mutex
	recorded [][]byte
}

// StartBoltServer starts a server; Close stops it.
func StartBoltServer(o BoltServerOptions) (*BoltServer, error) {
	if o.SlowDelay == 0 {
		o.SlowDelay = DefaultSlowDelay
	}
	s := &BoltServer{opts: o}
	srv, err := listen(o.Addr, s.serve)
	if err != nil {
		return nil, err
	}
	s.server = srv
	return s, nil
}

// Name is the server's name.
func (s *BoltServer) Name() string { return s.opts.Name }

// Recorded returns the raw frames received so far (Options.Record), in arrival order.
func (s *BoltServer) Recorded() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.recorded...)
}

var serverHeaderKey = []byte(BoltHeaderServer)

func (s *BoltServer) serve(nc net.Conn) {
	c := &lockedConn{Conn: nc}
	codec := bolt.New(bolt.Options{})
	fr := newFrameReader(nc, codec)
	pool := buffer.NewPool()
	out := pool.NewBuffer(64 << 10)
	defer out.Release()
	name := []byte(s.opts.Name)
	var hs []xprotocol.Header
	for {
		f, err := fr.next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.Failures.Add(1)
			}
			return
		}
		out.Reset()
		switch f.Kind {
		case xprotocol.KindHeartbeat:
			s.Heartbeats.Add(1)
			if err := codec.HeartbeatReply(out, f); err != nil {
				return
			}
		case xprotocol.KindOneway:
			s.Oneways.Add(1)
			s.record(f.Raw)
			continue
		case xprotocol.KindRequest:
			s.Requests.Add(1)
			s.record(f.Raw)
			if h := s.opts.Handler; h != nil {
				if resp, ok := h(append([]byte(nil), f.Raw...), f); ok {
					if c.write(resp) != nil {
						return
					}
					continue
				}
			}
			m := bolt.MessageOf(f)
			resp := bolt.Message{Kind: xprotocol.KindResponse, Version: m.Version, Ver1: m.Ver1, Switch: m.Switch,
				Ver2: m.Ver2, ID: m.ID, Codec: m.Codec}
			switch string(f.Method) {
			case MethodClose:
				s.CloseConns()
				return
			case MethodFail:
				resp.Status = bolt.StatusServerException
			case MethodError:
				resp.Status = bolt.StatusError
			default:
				hs = append(append(hs[:0], m.Headers...), xprotocol.Header{Key: serverHeaderKey, Value: name})
				resp.Class, resp.Headers, resp.Content = []byte(SofaResponseClass), hs, m.Content
			}
			if err := codec.EncodeMessage(out, &resp); err != nil {
				s.Failures.Add(1)
				return
			}
			if string(f.Method) == MethodSlow {
				b := append([]byte(nil), out.Bytes()...)
				s.after(s.opts.SlowDelay, func() { _ = c.write(b) })
				continue
			}
		default:
			continue // responses, heartbeat replies, go-aways: nothing to answer
		}
		if c.write(out.Bytes()) != nil {
			return
		}
	}
}

func (s *BoltServer) record(raw []byte) {
	if !s.opts.Record {
		return
	}
	s.mu.Lock()
	s.recorded = append(s.recorded, append([]byte(nil), raw...))
	s.mu.Unlock()
}

// BoltResponse is one frame the client received: a copy of the bytes and the codec's view.
type BoltResponse struct {
	Raw   []byte
	Frame xprotocol.Frame // aliases Raw
}

// Message is the full field view of the response.
func (r *BoltResponse) Message() bolt.Message { return bolt.MessageOf(&r.Frame) }

// Header returns the value of the first header named key.
func (r *BoltResponse) Header(key string) (string, bool) {
	v, ok := r.Frame.Header(key)
	return string(v), ok
}

// BoltClient is a multiplexed bolt client on one TCP connection: v1 and v2 frames may be
// mixed, any number in flight, responses matched by id.
type BoltClient struct {
	conn    *lockedConn
	codec   *bolt.Codec
	nextID  atomic.Uint32
	mu      sync.Mutex
	pending map[uint32]chan *BoltResponse
	err     error
	done    chan struct{}
	goAway  chan struct{}
	// Unmatched counts frames whose id matched no pending request.
	Unmatched atomic.Int64
}

// DialBolt connects to addr (bounded by timeout) and starts the reader.
func DialBolt(addr string, timeout time.Duration) (*BoltClient, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &BoltClient{conn: &lockedConn{Conn: nc}, codec: bolt.New(bolt.Options{}),
		pending: map[uint32]chan *BoltResponse{}, done: make(chan struct{}), goAway: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

func (c *BoltClient) readLoop() {
	fr := newFrameReader(c.conn, c.codec)
	var err error
	gone := false
	for {
		var f *xprotocol.Frame
		f, err = fr.next()
		if err != nil {
			break
		}
		r := &BoltResponse{Raw: append([]byte(nil), f.Raw...)}
		if _, derr := c.codec.Decode(r.Raw, &r.Frame); derr != nil {
			err = derr
			break
		}
		if r.Frame.Kind == xprotocol.KindGoAway {
			if !gone {
				gone = true
				close(c.goAway)
			}
			continue
		}
		id := uint32(r.Frame.ID)
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			c.Unmatched.Add(1)
			continue
		}
		ch <- r
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	c.pending = nil
	c.mu.Unlock()
	close(c.done)
}

// GoAway is closed when the peer sent a go-away (cmdcode 100): it asks for no new
// requests on this connection; the ones in flight are still answered.
func (c *BoltClient) GoAway() <-chan struct{} { return c.goAway }

// Done is closed when the connection is closed and the reader ended.
func (c *BoltClient) Done() <-chan struct{} { return c.done }

// Err is why the reader ended (nil while it runs).
func (c *BoltClient) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and waits for the reader.
func (c *BoltClient) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// NextID reserves a request id.
func (c *BoltClient) NextID() uint32 { return c.nextID.Add(1) }

// RoundTrip sends a copy of the whole frame raw with a fresh request id (CRC recomputed)
// and waits for the frame answering that id. It returns the id used.
func (c *BoltClient) RoundTrip(ctx context.Context, raw []byte) (*BoltResponse, uint32, error) {
	id := c.NextID()
	b := append([]byte(nil), raw...)
	SetBoltID(b, id)
	ch := make(chan *BoltResponse, 1)
	c.mu.Lock()
	if c.pending == nil {
		err := c.err
		c.mu.Unlock()
		return nil, id, err
	}
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.conn.write(b); err != nil {
		c.forget(id)
		return nil, id, fmt.Errorf("%w: write: %v", ErrClosed, err)
	}
	select {
	case r := <-ch:
		return r, id, nil
	case <-c.done:
		select {
		case r := <-ch:
			return r, id, nil
		default:
		}
		return nil, id, c.Err()
	case <-ctx.Done():
		c.forget(id)
		return nil, id, fmt.Errorf("rpcpeer: bolt request %d: %w", id, ctx.Err())
	}
}

func (c *BoltClient) forget(id uint32) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Send writes a copy of raw with a fresh id and does not wait (one-way frames).
func (c *BoltClient) Send(raw []byte) (uint32, error) {
	id := c.NextID()
	b := append([]byte(nil), raw...)
	SetBoltID(b, id)
	return id, c.conn.write(b)
}

// WriteRaw writes bytes as they are.
func (c *BoltClient) WriteRaw(b []byte) error { return c.conn.write(b) }

// EncodeBolt encodes m with mosnlite's bolt codec.
func EncodeBolt(m bolt.Message) ([]byte, error) {
	b := buffer.NewPool().NewBuffer(256 + len(m.Content))
	defer b.Release()
	if err := bolt.New(bolt.Options{}).EncodeMessage(b, &m); err != nil {
		return nil, err
	}
	return append([]byte(nil), b.Bytes()...), nil
}

// Call encodes m with mosnlite's bolt codec (m.ID is replaced by a fresh id) and waits for
// the response.
func (c *BoltClient) Call(ctx context.Context, m bolt.Message) (*BoltResponse, error) {
	b, err := EncodeBolt(m)
	if err != nil {
		return nil, err
	}
	r, _, err := c.RoundTrip(ctx, b)
	return r, err
}

// BoltRequest is a request message for service with the given method and content: class
// SofaRequestClass, codec hessian2, no timeout, command version 1; version 1 or 2.
func BoltRequest(version byte, service, method string, content []byte) bolt.Message {
	hs := []xprotocol.Header{{Key: []byte(BoltHeaderService), Value: []byte(service)}}
	if method != "" {
		hs = append(hs, xprotocol.Header{Key: []byte(BoltHeaderMethod), Value: []byte(method)})
	}
	return bolt.Message{Kind: xprotocol.KindRequest, Version: version, Ver1: 1, Ver2: 1,
		Codec: bolt.CodecHessian2, Timeout: -1, Class: []byte(SofaRequestClass), Headers: hs, Content: content}
}
