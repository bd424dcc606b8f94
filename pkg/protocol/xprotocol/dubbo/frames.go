package dubbo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// putHeader writes a 16-byte header.
func putHeader(h []byte, flag, status byte, id uint64, bodyLen int) {
	h[0], h[1], h[2], h[3] = magicHigh, magicLow, flag, status
	binary.BigEndian.PutUint64(h[4:12], id)
	binary.BigEndian.PutUint32(h[12:16], uint32(bodyLen))
}

// HeartbeatReply answers the heartbeat req: flag 0x22 (event response, hessian2), status
// 20, the same id, body hessian2 null. An event request without the two-way bit gets no
// reply (Dubbo replies only to two-way heartbeats): nothing is written.
func (c *Codec) HeartbeatReply(dst *buffer.IoBuffer, req *xprotocol.Frame) error {
	if req.Proto[protoFlags]&pfOnewayEvent != 0 {
		return nil
	}
	putEvent(dst, flagEvent|serialHessian, StatusOK, req.ID)
	return nil
}

// Heartbeat writes a two-way heartbeat request (flag 0xe2, body null), as Dubbo sends.
func (c *Codec) Heartbeat(dst *buffer.IoBuffer, id uint64) error {
	putEvent(dst, flagRequest|flagTwoWay|flagEvent|serialHessian, 0, id)
	return nil
}

func putEvent(dst *buffer.IoBuffer, flag, status byte, id uint64) {
	b := dst.Alloc(HeaderLen + 1)
	putHeader(b, flag, status, id, 1)
	b[HeaderLen] = tagNull
}

// GoAway writes Dubbo's readonly event: a one-way event request (flag 0xa2) whose body is
// the hessian2 string "R". A Dubbo consumer (2.5+) marks the channel readonly on it and
// sends its next requests over other channels, which is what go-away means; older peers
// and dubbo-go ignore it (dubbo-go answers it as a heartbeat). Decode maps it back to
// KindGoAway.
func (c *Codec) GoAway(dst *buffer.IoBuffer, id uint64) error {
	b := dst.Alloc(HeaderLen + 2)
	putHeader(b, flagRequest|flagEvent|serialHessian, 0, id, 2)
	b[HeaderLen], b[HeaderLen+1] = 0x01, 'R'
	return nil
}

// CauseStatus is the response status Hijack sends for cause:
// no route and no healthy upstream 60 (service not found); overflow 100 (server threadpool
// exhausted: what an overloaded Dubbo provider answers; consumers treat it as a retriable
// remoting error, where 40 would blame the request); timeout 30; upstream timeout 31;
// codec error 70; forbidden 80; connection closed 35 (Dubbo's own status for requests left
// pending on a closed channel); anything else 80.
func CauseStatus(cause xprotocol.Cause) byte {
	switch cause {
	case xprotocol.CauseNoRoute, xprotocol.CauseNoHealthyUpstream:
		return StatusServiceNotFound
	case xprotocol.CauseOverflow:
		return StatusThreadpoolExhausted
	case xprotocol.CauseTimeout:
		return StatusClientTimeout
	case xprotocol.CauseUpstreamTimeout:
		return StatusServerTimeout
	case xprotocol.CauseCodecError:
		return StatusServiceError
	case xprotocol.CauseForbidden:
		return StatusServerError
	case xprotocol.CauseConnectionClosed:
		return StatusChannelInactive
	}
	return StatusServerError
}

// Hijack writes the error response for req: flag 0x02, status CauseStatus(cause), the same
// id, body the hessian2 string msg (what Dubbo's ExchangeCodec writes for an error
// response). One-way requests get no response: it returns an error wrapping
// xprotocol.ErrUnsupported and writes nothing.
func (c *Codec) Hijack(dst *buffer.IoBuffer, req *xprotocol.Frame, cause xprotocol.Cause, msg string) error {
	if req.Kind == xprotocol.KindOneway {
		return fmt.Errorf("dubbo: response to a one-way request: %w", xprotocol.ErrUnsupported)
	}
	return writeError(dst, req.ID, CauseStatus(cause), msg)
}

func writeError(dst *buffer.IoBuffer, id uint64, status byte, msg string) error {
	e := hessian.NewEncoder()
	if err := e.Encode(msg); err != nil {
		return fmt.Errorf("dubbo: encode error message: %w", err)
	}
	body := e.Buffer()
	putHeader(dst.Alloc(HeaderLen), serialHessian, status, id, len(body))
	_, err := dst.Write(body)
	return err
}

// Request builds a Dubbo request with dubbo-go-hessian2's own packer (framework version
// "2.0.2", the parameter descriptor derived from Args' Go types, attachments path,
// interface, version, group and timeout added), byte for byte what dubbo-go sends.
type Request struct {
	ID        uint64
	OneWay    bool
	Service   string // service path
	Interface string // "interface" attachment; default Service
	Version   string
	Group     string
	Method    string
	Timeout   time.Duration // "timeout" attachment in ms; 0: none
	Args      []any
	// Attachments are sent besides the ones above (copied, never modified).
	Attachments map[string]string
}

// Bytes returns the encoded frame.
func (r *Request) Bytes() ([]byte, error) {
	atts := make(map[string]string, len(r.Attachments)+5)
	maps.Copy(atts, r.Attachments)
	args := r.Args
	if args == nil {
		args = []any{}
	}
	typ := hessian.PackageRequest_TwoWay
	if r.OneWay {
		typ = hessian.PackageRequest
	}
	iface := r.Interface
	if iface == "" {
		iface = r.Service
	}
	svc := hessian.Service{Path: r.Service, Interface: iface, Group: r.Group, Version: r.Version, Method: r.Method, Timeout: r.Timeout}
	hdr := hessian.DubboHeader{SerialID: serialHessian, Type: typ, ID: int64(r.ID)}
	b, err := hessian.NewHessianCodec(nil).Write(svc, hdr, hessian.NewRequest(args, atts))
	if err != nil {
		return nil, fmt.Errorf("dubbo: encode request: %w", err)
	}
	return b, nil
}

// Encode appends the encoded frame to dst.
func (r *Request) Encode(dst *buffer.IoBuffer) error {
	b, err := r.Bytes()
	if err != nil {
		return err
	}
	_, err = dst.Write(b)
	return err
}

// Response builds a Dubbo response with dubbo-go-hessian2's own packer (which, like
// dubbo-go, appends a hessian2 null after the body).
type Response struct {
	ID     uint64
	Status byte // 0: StatusOK
	// Status OK: Value (nil: the null result), or Exception (a business exception, sent as
	// java.lang.Throwable unless it is a java_exception.Throwabler).
	Value     any
	Exception error
	// Attachments, when non-nil, are sent (result flags 3-5); "dubbo" defaults to "2.0.2",
	// the library's condition for sending them.
	Attachments map[string]string
	// ErrorMessage is the body of a response whose Status is not OK.
	ErrorMessage string
}

// Bytes returns the encoded frame.
func (r *Response) Bytes() ([]byte, error) {
	status := r.Status
	if status == 0 {
		status = StatusOK
	}
	var atts map[string]string
	if r.Attachments != nil {
		atts = maps.Clone(r.Attachments)
		if _, ok := atts["dubbo"]; !ok {
			atts["dubbo"] = hessian.DEFAULT_DUBBO_PROTOCOL_VERSION
		}
	}
	body := hessian.NewResponse(r.Value, r.Exception, atts)
	if status != StatusOK {
		body = hessian.NewResponse(r.ErrorMessage, nil, nil)
	}
	hdr := hessian.DubboHeader{SerialID: serialHessian, Type: hessian.PackageResponse, ID: int64(r.ID), ResponseStatus: status}
	b, err := hessian.NewHessianCodec(nil).Write(hessian.Service{}, hdr, body)
	if err != nil {
		return nil, fmt.Errorf("dubbo: encode response: %w", err)
	}
	return b, nil
}

// Encode appends the encoded frame to dst.
func (r *Response) Encode(dst *buffer.IoBuffer) error {
	b, err := r.Bytes()
	if err != nil {
		return err
	}
	_, err = dst.Write(b)
	return err
}

var errNoKind = errors.New("dubbo: cannot encode a frame without Raw of this kind")

// encodeBuilt encodes a frame that was not decoded: a request from Service, Method,
// Timeout and the headers "version", "group" and the rest as attachments, without
// arguments; a response with the null result (status OK) or an empty error message; the
// heartbeat, heartbeat reply and readonly (go-away) events.
func (c *Codec) encodeBuilt(dst *buffer.IoBuffer, f *xprotocol.Frame) error {
	switch f.Kind {
	case xprotocol.KindRequest, xprotocol.KindOneway:
		r := Request{ID: f.ID, OneWay: f.Kind == xprotocol.KindOneway, Service: string(f.Service),
			Method: string(f.Method), Timeout: f.Timeout, Attachments: map[string]string{}}
		for _, h := range f.Headers {
			switch k := string(h.Key); k {
			case "service", "method", "timeout", "path":
			case "version":
				r.Version = string(h.Value)
			case "group":
				r.Group = string(h.Value)
			case "interface":
				r.Interface = string(h.Value)
			default:
				r.Attachments[k] = string(h.Value)
			}
		}
		return r.Encode(dst)
	case xprotocol.KindResponse:
		return (&Response{ID: f.ID, Status: byte(f.Status)}).Encode(dst)
	case xprotocol.KindHeartbeat:
		return c.Heartbeat(dst, f.ID)
	case xprotocol.KindHeartbeatReply:
		status := byte(f.Status)
		if status == 0 {
			status = StatusOK
		}
		putEvent(dst, flagEvent|serialHessian, status, f.ID)
		return nil
	case xprotocol.KindGoAway:
		return c.GoAway(dst, f.ID)
	}
	return errNoKind
}
