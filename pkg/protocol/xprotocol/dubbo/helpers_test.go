package dubbo

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// capturedFrame is one frame reassembled from testdata/captures/dubbo-go-hessian2.hex.
type capturedFrame struct {
	dir string // "C>S" or "S>C"
	raw []byte
}

// captures reassembles the capture per direction and splits it by the header's length.
func captures(tb testing.TB) []capturedFrame {
	tb.Helper()
	data, err := os.ReadFile("testdata/captures/dubbo-go-hessian2.hex")
	if err != nil {
		tb.Fatal(err)
	}
	pending := map[string][]byte{}
	var out []capturedFrame
	for line := range strings.Lines(string(data)) {
		dir, hx, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		b, err := hex.DecodeString(hx)
		if err != nil {
			tb.Fatalf("bad hex line %q: %v", line, err)
		}
		p := append(pending[dir], b...)
		for len(p) >= HeaderLen {
			n := HeaderLen + int(uint32(p[12])<<24|uint32(p[13])<<16|uint32(p[14])<<8|uint32(p[15]))
			if len(p) < n {
				break
			}
			out = append(out, capturedFrame{dir: dir, raw: bytes.Clone(p[:n])})
			p = p[n:]
		}
		pending[dir] = p
	}
	for dir, p := range pending {
		if len(p) > 0 {
			tb.Fatalf("%s: %d trailing bytes", dir, len(p))
		}
	}
	return out
}

func decodeOne(tb testing.TB, c *Codec, b []byte) *xprotocol.Frame {
	tb.Helper()
	f := &xprotocol.Frame{}
	n, err := c.Decode(b, f)
	if err != nil || n != len(b) {
		tb.Fatalf("Decode = %d, %v; want %d, nil", n, err, len(b))
	}
	return f
}

func header(f *xprotocol.Frame, k string) string {
	v, _ := f.Header(k)
	return string(v)
}

func encodeFrame(tb testing.TB, c *Codec, f *xprotocol.Frame) []byte {
	tb.Helper()
	var dst buffer.IoBuffer
	if err := c.Encode(&dst, f); err != nil {
		tb.Fatalf("Encode: %v", err)
	}
	return bytes.Clone(dst.Bytes())
}

// must(tb)(b, err) fails tb on err.
func must(tb testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
}

// libAttachments is the oracle: dubbo-go-hessian2's own ReadAttachments on a whole frame.
func libAttachments(tb testing.TB, raw []byte) map[string]string {
	tb.Helper()
	hc := hessian.NewHessianCodec(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	var h hessian.DubboHeader
	if err := hc.ReadHeader(&h); err != nil {
		tb.Fatalf("library ReadHeader: %v", err)
	}
	m, err := hc.ReadAttachments()
	if err != nil {
		tb.Fatalf("library ReadAttachments: %v", err)
	}
	return m
}

// libResponse decodes a response frame with the library.
func libResponse(tb testing.TB, raw []byte) (hessian.DubboHeader, *hessian.Response, error) {
	tb.Helper()
	hc := hessian.NewHessianCodec(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	var h hessian.DubboHeader
	if err := hc.ReadHeader(&h); err != nil {
		tb.Fatalf("library ReadHeader: %v", err)
	}
	resp := &hessian.Response{}
	err := hc.ReadBody(resp)
	return h, resp, err
}

// hessianBytes encodes values back to back with the library's encoder.
func hessianBytes(tb testing.TB, vs ...any) []byte {
	tb.Helper()
	e := hessian.NewEncoder()
	for _, v := range vs {
		if err := e.Encode(v); err != nil {
			tb.Fatalf("encode %v: %v", v, err)
		}
	}
	return e.Buffer()
}

// requestFrame wraps a body in a two-way hessian2 request header.
func requestFrame(id uint64, body []byte) []byte {
	b := make([]byte, HeaderLen, HeaderLen+len(body))
	putHeader(b, flagRequest|flagTwoWay|serialHessian, 0, id, len(body))
	return append(b, body...)
}

// requestBody is the leading strings (and descriptor) of a request body followed by rest.
func requestBody(tb testing.TB, service, method, desc string, rest ...byte) []byte {
	tb.Helper()
	return append(hessianBytes(tb, "2.0.2", service, "1.0.0", method, desc), rest...)
}

// user is a POJO argument registered with the library.
type user struct {
	Name string
	Age  int32
	Tags []string
}

func (user) JavaClassName() string { return "com.example.User" }

func init() { hessian.RegisterPOJO(&user{}) }
