package bolt_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

// testVector is the 45-byte request of PROTOCOLS.md.
var testVector = mustHex("01 01 0001 01 00000001 01 FFFFFFFF 0000 0013 00000004" +
	"00000007 73657276696365 00000004 74657374" +
	"6e756c6c")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// captured is the capture file reassembled: all client bytes and all server bytes.
type captured struct{ c2s, s2c []byte }

func readCapture(tb testing.TB) captured {
	tb.Helper()
	fh, err := os.Open("testdata/sofa-bolt-node.hex")
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	var cp captured
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		dir, hx, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		b := mustHex(hx)
		switch dir {
		case "C>S":
			cp.c2s = append(cp.c2s, b...)
		case "S>C":
			cp.s2c = append(cp.s2c, b...)
		default:
			tb.Fatalf("capture line direction %q", dir)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cp
}

// split cuts a stream into frames with Decode, failing on any error or leftover.
func split(tb testing.TB, c *bolt.Codec, stream []byte) [][]byte {
	tb.Helper()
	var out [][]byte
	var f xprotocol.Frame
	for len(stream) > 0 {
		f.Reset()
		n, err := c.Decode(stream, &f)
		if err != nil || n == 0 {
			tb.Fatalf("Decode after %d frames = %d, %v; %d bytes left", len(out), n, err, len(stream))
		}
		out = append(out, stream[:n])
		stream = stream[n:]
	}
	return out
}

// capturedFrames returns the frames of the capture: requests then responses.
func capturedFrames(tb testing.TB) (reqs, resps [][]byte) {
	cp := readCapture(tb)
	c := bolt.New(bolt.Options{})
	return split(tb, c, cp.c2s), split(tb, c, cp.s2c)
}

func decode(tb testing.TB, c *bolt.Codec, b []byte) *xprotocol.Frame {
	tb.Helper()
	f := new(xprotocol.Frame)
	n, err := c.Decode(b, f)
	if err != nil || n != len(b) {
		tb.Fatalf("Decode(% x) = %d, %v; want %d, nil", b, n, err, len(b))
	}
	return f
}

func encodeMsg(tb testing.TB, c *bolt.Codec, m bolt.Message) []byte {
	tb.Helper()
	var dst buffer.IoBuffer
	if err := c.EncodeMessage(&dst, &m); err != nil {
		tb.Fatalf("EncodeMessage(%+v): %v", m, err)
	}
	return bytes.Clone(dst.Bytes())
}

// equalHeaders compares header lists by bytes.
func equalHeaders(a, b []xprotocol.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Key, b[i].Key) || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// equalFrame compares the decoded fields of two frames (not Raw, not Proto).
func equalFrame(a, b *xprotocol.Frame) bool {
	return a.Kind == b.Kind && a.ID == b.ID && a.Version == b.Version && a.Timeout == b.Timeout &&
		a.Status == b.Status && bytes.Equal(a.Service, b.Service) && bytes.Equal(a.Method, b.Method) &&
		(a.Service == nil) == (b.Service == nil) && (a.Method == nil) == (b.Method == nil) &&
		equalHeaders(a.Headers, b.Headers)
}

// equalMessage compares two messages field by field (slices by bytes).
func equalMessage(a, b bolt.Message) bool {
	return a.Kind == b.Kind && a.Version == b.Version && a.Ver1 == b.Ver1 && a.Switch == b.Switch &&
		a.Ver2 == b.Ver2 && a.ID == b.ID && a.Codec == b.Codec && a.Timeout == b.Timeout &&
		a.Status == b.Status && bytes.Equal(a.Class, b.Class) && bytes.Equal(a.Content, b.Content) &&
		equalHeaders(a.Headers, b.Headers)
}

func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }
