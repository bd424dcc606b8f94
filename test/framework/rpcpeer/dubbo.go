package rpcpeer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/apache/dubbo-go-hessian2/java_exception"
)

// Dubbo wire facts the peers need beyond the library.
const (
	DubboHeaderLen = 16
	// DubboMaxBody is Dubbo's default payload limit; the peers refuse larger frames.
	DubboMaxBody  = 8 << 20
	dubboHessian2 = 2
	// DubboVersion is the framework version the library writes in requests.
	DubboVersion = hessian.DEFAULT_DUBBO_PROTOCOL_VERSION
)

// Attachment keys the server adds to its responses.
const (
	AttServer = "server" // the answering server's Name
	AttMethod = "method" // the method the server saw
)

// DubboRequest is what the server decoded from one request, with the library.
type DubboRequest struct {
	ID          int64
	TwoWay      bool
	Path        string
	Version     string
	Method      string
	Types       string
	Args        []any
	Attachments map[string]string
}

// DubboServerOptions configure a DubboServer.
type DubboServerOptions struct {
	Addr      string        // listen address; "" picks a free loopback port
	Name      string        // returned in the AttServer response attachment
	SlowDelay time.Duration // MethodSlow's delay; 0: DefaultSlowDelay
	// Record keeps every decoded request (Requests returns them).
	Record bool
	// Fast skips decoding: every two-way request is answered with one response the
	// library encoded once (FastValue), its id patched; events are still answered and
	// one-way requests counted. For load generation, where the server must cost little.
	Fast      bool
	FastValue any
}

// DubboServer is a Dubbo provider: it decodes requests with dubbo-go-hessian2 and answers
// with the library's response encoding. The echo answer's value is the request's only
// argument (or the argument list), and its attachments carry AttServer, AttMethod and
// the request's attachments.
type DubboServer struct {
	*server
	opts       DubboServerOptions
	fastResp   []byte
	Requests   atomic.Int64 // two-way requests received
	Oneways    atomic.Int64 // one-way requests received
	Heartbeats atomic.Int64 // event requests received
	Failures   atomic.Int64 // frames the library could not decode

	mu       sync.Mutex
	recorded []DubboRequest
}

// StartDubboServer starts a server; Close stops it.
func StartDubboServer(o DubboServerOptions) (*DubboServer, error) {
	if o.SlowDelay == 0 {
		o.SlowDelay = DefaultSlowDelay
	}
	s := &DubboServer{opts: o}
	if o.Fast {
		b, err := EncodeDubboResponse(0, hessian.Response_OK, o.FastValue, map[string]string{AttServer: o.Name})
		if err != nil {
			return nil, err
		}
		s.fastResp = b
	}
	srv, err := listen(o.Addr, s.serve)
	if err != nil {
		return nil, err
	}
	s.server = srv
	return s, nil
}

// Name is the server's name.
func (s *DubboServer) Name() string { return s.opts.Name }

// Recorded returns a copy of the requests recorded so far (Options.Record).
func (s *DubboServer) Recorded() []DubboRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DubboRequest(nil), s.recorded...)
}

func (s *DubboServer) serve(nc net.Conn) {
	c := &lockedConn{Conn: nc}
	r := bufio.NewReaderSize(nc, 64<<10)
	var fast []byte
	if s.opts.Fast {
		fast = append([]byte(nil), s.fastResp...)
	}
	for {
		frame, err := ReadDubboFrame(r, DubboMaxBody)
		if err != nil {
			return
		}
		if s.opts.Fast {
			if !s.fastFrame(c, frame, fast) {
				return
			}
			continue
		}
		if !s.handle(c, frame) {
			return
		}
	}
}

// fastFrame answers without decoding the body; false ends the connection.
func (s *DubboServer) fastFrame(c *lockedConn, frame, resp []byte) bool {
	flag := frame[2]
	id := binary.BigEndian.Uint64(frame[4:12])
	switch {
	case flag&hessian.FLAG_REQUEST == 0:
		return true // a response (to nothing we sent): ignore
	case flag&hessian.FLAG_EVENT != 0:
		s.Heartbeats.Add(1)
		if flag&hessian.FLAG_TWOWAY == 0 {
			return true
		}
		b, err := EncodeDubboHeartbeatReply(int64(id))
		return err == nil && c.write(b) == nil
	case flag&hessian.FLAG_TWOWAY == 0:
		s.Oneways.Add(1)
		return true
	}
	s.Requests.Add(1)
	binary.BigEndian.PutUint64(resp[4:12], id)
	return c.write(resp) == nil
}

// handle decodes one frame with the library and answers it; false ends the connection.
func (s *DubboServer) handle(c *lockedConn, frame []byte) bool {
	h, req, err := DecodeDubboRequest(frame)
	if err != nil {
		s.Failures.Add(1)
		return true
	}
	if h.Type&hessian.PackageRequest == 0 {
		return true
	}
	twoWay := h.Type&hessian.PackageRequest_TwoWay != 0
	if h.Type&hessian.PackageHeartbeat != 0 {
		s.Heartbeats.Add(1)
		if !twoWay {
			return true
		}
		b, err := EncodeDubboHeartbeatReply(h.ID)
		return err == nil && c.write(b) == nil
	}
	req.TwoWay = twoWay
	if twoWay {
		s.Requests.Add(1)
	} else {
		s.Oneways.Add(1)
	}
	if s.opts.Record {
		s.mu.Lock()
		s.recorded = append(s.recorded, *req)
		s.mu.Unlock()
	}
	if !twoWay {
		return true
	}
	atts := map[string]string{}
	for k, v := range req.Attachments {
		atts[k] = v
	}
	atts[AttServer], atts[AttMethod] = s.opts.Name, req.Method
	atts[hessian.DUBBO_VERSION_KEY] = DubboVersion // makes the library write attachments
	var resp []byte
	switch req.Method {
	case MethodClose:
		s.CloseConns()
		return false
	case MethodFail:
		resp, err = encodeDubbo(hessian.DubboHeader{SerialID: dubboHessian2, Type: hessian.PackageResponse,
			ID: h.ID, ResponseStatus: hessian.Response_OK},
			hessian.NewResponse(nil, java_exception.NewThrowable("rpcpeer: fail requested"), atts))
	case MethodError:
		resp, err = EncodeDubboResponse(h.ID, hessian.Response_SERVICE_ERROR, "rpcpeer: error requested", nil)
	default:
		var v any = req.Args
		if len(req.Args) == 1 {
			v = req.Args[0]
		}
		resp, err = EncodeDubboResponse(h.ID, hessian.Response_OK, v, atts)
	}
	if err != nil {
		s.Failures.Add(1)
		return true
	}
	if req.Method == MethodSlow {
		s.after(s.opts.SlowDelay, func() { _ = c.write(resp) })
		return true
	}
	return c.write(resp) == nil
}

// ReadDubboFrame reads one whole frame (header and body) from r. A body over max, or a
// wrong magic, is an error.
func ReadDubboFrame(r *bufio.Reader, max int) ([]byte, error) {
	hdr, err := r.Peek(DubboHeaderLen)
	if err != nil {
		return nil, err
	}
	if hdr[0] != hessian.MAGIC_HIGH || hdr[1] != hessian.MAGIC_LOW {
		return nil, fmt.Errorf("rpcpeer: dubbo: bad magic % x", hdr[:2])
	}
	n := binary.BigEndian.Uint32(hdr[12:16])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("rpcpeer: dubbo: body of %d bytes over %d", n, max)
	}
	frame := make([]byte, DubboHeaderLen+int(n))
	if _, err := io.ReadFull(r, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

// libraryCodec wraps one whole frame in the library's codec.
func libraryCodec(frame []byte) (*hessian.HessianCodec, hessian.DubboHeader, error) {
	codec := hessian.NewHessianCodec(bufio.NewReaderSize(bytes.NewReader(frame), max(len(frame), DubboHeaderLen)))
	var h hessian.DubboHeader
	if err := codec.ReadHeader(&h); err != nil {
		return nil, h, err
	}
	return codec, h, nil
}

// DecodeDubboRequest decodes a request frame with the library (hessian.HessianCodec
// ReadHeader then ReadBody); req is nil for events. Library panics are returned as errors.
func DecodeDubboRequest(frame []byte) (h hessian.DubboHeader, req *DubboRequest, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("rpcpeer: dubbo-go-hessian2 panicked: %v", p)
		}
	}()
	codec, h, err := libraryCodec(frame)
	if err != nil {
		return h, nil, err
	}
	if h.Type&hessian.PackageRequest == 0 {
		return h, nil, errors.New("rpcpeer: dubbo: not a request")
	}
	if h.Type&hessian.PackageHeartbeat != 0 {
		return h, nil, codec.ReadBody(nil)
	}
	body := make([]any, 7)
	if err := codec.ReadBody(body); err != nil {
		return h, nil, err
	}
	req = &DubboRequest{ID: h.ID}
	req.Path, _ = body[1].(string)
	req.Version, _ = body[2].(string)
	req.Method, _ = body[3].(string)
	req.Types, _ = body[4].(string)
	req.Args, _ = body[5].([]any)
	req.Attachments, _ = body[6].(map[string]string)
	return h, req, nil
}

// IsDubboReadonly reports whether frame is Dubbo's readonly event: an event request whose
// body the library decodes to the string "R" (what a closing provider sends its consumers).
func IsDubboReadonly(frame []byte) (ok bool) {
	if len(frame) < DubboHeaderLen || frame[2]&hessian.FLAG_REQUEST == 0 || frame[2]&hessian.FLAG_EVENT == 0 {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	v, err := hessian.NewDecoder(frame[DubboHeaderLen:]).Decode()
	return err == nil && v == "R"
}

// DubboResult is one decoded response.
type DubboResult struct {
	ID          int64
	Status      byte // header status (20 OK)
	Heartbeat   bool // an event response
	Value       any
	Attachments map[string]string
	// Exception is the Java exception result (status 20) or the error message (other
	// statuses), as the library reports them.
	Exception error
}

// DecodeDubboResponse decodes a response frame with the library (ReadHeader, ReadBody
// into a hessian.Response). Library panics are returned as errors.
func DecodeDubboResponse(frame []byte) (res *DubboResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("rpcpeer: dubbo-go-hessian2 panicked: %v", p)
		}
	}()
	codec, h, err := libraryCodec(frame)
	if err != nil {
		return nil, err
	}
	if h.Type&hessian.PackageResponse == 0 {
		return nil, errors.New("rpcpeer: dubbo: not a response")
	}
	res = &DubboResult{ID: h.ID, Status: h.ResponseStatus, Heartbeat: h.Type&hessian.PackageHeartbeat != 0}
	rsp := &hessian.Response{}
	if err := codec.ReadBody(rsp); err != nil {
		return res, err
	}
	res.Value, res.Attachments, res.Exception = rsp.RspObj, rsp.Attachments, rsp.Exception
	return res, nil
}

func encodeDubbo(h hessian.DubboHeader, body any) ([]byte, error) {
	return hessian.NewHessianCodec(nil).Write(hessian.Service{}, h, body)
}

// EncodeDubboResponse encodes a response with the library: value and attachments for
// status 20 (attachments are written when they hold the "dubbo" version key ≥ 2.0.2),
// else value is the error message.
func EncodeDubboResponse(id int64, status byte, value any, atts map[string]string) ([]byte, error) {
	if status == hessian.Response_OK && atts != nil {
		if _, ok := atts[hessian.DUBBO_VERSION_KEY]; !ok {
			atts[hessian.DUBBO_VERSION_KEY] = DubboVersion
		}
	}
	h := hessian.DubboHeader{SerialID: dubboHessian2, Type: hessian.PackageResponse, ID: id, ResponseStatus: status}
	if status != hessian.Response_OK {
		return encodeDubbo(h, hessian.NewResponse(nil, errors.New(fmt.Sprint(value)), nil))
	}
	return encodeDubbo(h, hessian.NewResponse(value, nil, atts))
}

// EncodeDubboHeartbeatReply encodes the library's event response (flag 0x22, status 20, body N).
func EncodeDubboHeartbeatReply(id int64) ([]byte, error) {
	return encodeDubbo(hessian.DubboHeader{SerialID: dubboHessian2, Type: hessian.PackageHeartbeat,
		ID: id, ResponseStatus: hessian.Response_OK}, nil)
}

// EncodeDubboRequest encodes a request with the library's PackRequest path: DubboHeader +
// Service{Path, Interface, Group, Version, Method, Timeout} + args + attachments. twoWay
// false makes a one-way request. atts is not modified.
func EncodeDubboRequest(id int64, svc hessian.Service, args []any, atts map[string]string, twoWay bool) ([]byte, error) {
	typ := hessian.PackageRequest_TwoWay
	if !twoWay {
		typ = hessian.PackageRequest
	}
	a := make(map[string]string, len(atts)+5)
	for k, v := range atts {
		a[k] = v
	}
	if args == nil {
		args = []any{}
	}
	return hessian.NewHessianCodec(nil).Write(svc, hessian.DubboHeader{SerialID: dubboHessian2, Type: typ, ID: id},
		hessian.NewRequest(args, a))
}

// EncodeDubboHeartbeat encodes the library's heartbeat (event) request.
func EncodeDubboHeartbeat(id int64) ([]byte, error) {
	return hessian.NewHessianCodec(nil).Write(hessian.Service{},
		hessian.DubboHeader{SerialID: dubboHessian2, Type: hessian.PackageHeartbeat, ID: id}, []any{})
}

// DubboClient is a multiplexed Dubbo consumer on one TCP connection: any number of
// requests in flight, responses matched by id.
type DubboClient struct {
	conn    *lockedConn
	nextID  atomic.Int64
	mu      sync.Mutex
	pending map[int64]chan *DubboResult
	err     error
	done    chan struct{}
	goAway  chan struct{}
	// Unmatched counts responses whose id matched no pending request; Undecodable counts
	// responses the library could not decode.
	Unmatched   atomic.Int64
	Undecodable atomic.Int64
}

// DialDubbo connects to addr (bounded by timeout) and starts the reader.
func DialDubbo(addr string, timeout time.Duration) (*DubboClient, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &DubboClient{conn: &lockedConn{Conn: nc}, pending: map[int64]chan *DubboResult{}, done: make(chan struct{}),
		goAway: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

func (c *DubboClient) readLoop() {
	r := bufio.NewReaderSize(c.conn, 64<<10)
	var err error
	gone := false
	for {
		var frame []byte
		frame, err = ReadDubboFrame(r, DubboMaxBody)
		if err != nil {
			break
		}
		if IsDubboReadonly(frame) {
			if !gone {
				gone = true
				close(c.goAway)
			}
			continue
		}
		res, derr := DecodeDubboResponse(frame)
		if res == nil {
			c.Undecodable.Add(1)
			continue
		}
		if derr != nil {
			c.Undecodable.Add(1)
			res.Exception = derr
		}
		c.mu.Lock()
		ch, ok := c.pending[res.ID]
		delete(c.pending, res.ID)
		c.mu.Unlock()
		if !ok {
			c.Unmatched.Add(1)
			continue
		}
		ch <- res
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	c.pending = nil
	c.mu.Unlock()
	close(c.done)
}

// GoAway is closed when the provider sent Dubbo's readonly event: a consumer sends no new
// requests on the connection; the ones in flight are still answered.
func (c *DubboClient) GoAway() <-chan struct{} { return c.goAway }

// Done is closed when the connection is closed (by either side) and the reader ended.
func (c *DubboClient) Done() <-chan struct{} { return c.done }

// Err is why the reader ended (nil while it runs).
func (c *DubboClient) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and waits for the reader.
func (c *DubboClient) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// LocalAddr is the client's address.
func (c *DubboClient) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// NextID reserves a request id.
func (c *DubboClient) NextID() int64 { return c.nextID.Add(1) }

// register makes a slot for id's response.
func (c *DubboClient) register(id int64) (chan *DubboResult, error) {
	ch := make(chan *DubboResult, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return nil, c.err
	}
	if _, dup := c.pending[id]; dup {
		return nil, fmt.Errorf("rpcpeer: id %d already in flight", id)
	}
	c.pending[id] = ch
	return ch, nil
}

func (c *DubboClient) forget(id int64) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// RoundTrip writes frame (whose id must be id) and waits for the response to id.
func (c *DubboClient) RoundTrip(ctx context.Context, id int64, frame []byte) (*DubboResult, error) {
	ch, err := c.register(id)
	if err != nil {
		return nil, err
	}
	if err := c.conn.write(frame); err != nil {
		c.forget(id)
		return nil, fmt.Errorf("%w: write: %v", ErrClosed, err)
	}
	select {
	case res := <-ch:
		return res, nil
	case <-c.done:
		select {
		case res := <-ch:
			return res, nil
		default:
		}
		return nil, c.Err()
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("rpcpeer: dubbo request %d: %w", id, ctx.Err())
	}
}

// Call sends a two-way request encoded by the library and waits for its response.
func (c *DubboClient) Call(ctx context.Context, svc hessian.Service, args []any, atts map[string]string) (*DubboResult, error) {
	id := c.NextID()
	frame, err := EncodeDubboRequest(id, svc, args, atts, true)
	if err != nil {
		return nil, err
	}
	return c.RoundTrip(ctx, id, frame)
}

// Oneway sends a one-way request; nothing answers it.
func (c *DubboClient) Oneway(svc hessian.Service, args []any, atts map[string]string) error {
	frame, err := EncodeDubboRequest(c.NextID(), svc, args, atts, false)
	if err != nil {
		return err
	}
	return c.conn.write(frame)
}

// Heartbeat sends an event request and waits for the event response.
func (c *DubboClient) Heartbeat(ctx context.Context) (*DubboResult, error) {
	id := c.NextID()
	frame, err := EncodeDubboHeartbeat(id)
	if err != nil {
		return nil, err
	}
	return c.RoundTrip(ctx, id, frame)
}

// WriteRaw writes bytes as they are (malformed or oversized frames).
func (c *DubboClient) WriteRaw(b []byte) error { return c.conn.write(b) }
