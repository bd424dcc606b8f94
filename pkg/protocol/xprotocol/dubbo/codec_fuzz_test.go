package dubbo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// builtFrames are seeds made with the library's encoder and the codec's own writers.
func builtFrames(tb testing.TB) [][]byte {
	c := New(Options{})
	out := [][]byte{
		must(tb)((&Request{ID: 1, Service: "com.example.S", Method: "m", Group: "g", Timeout: time.Second, Args: []any{"a", int32(1)}}).Bytes()),
		must(tb)((&Request{ID: 2, OneWay: true, Service: "com.例子.😀", Method: "m", Args: []any{&user{Name: "x", Tags: []string{"t"}}}}).Bytes()),
		must(tb)((&Response{ID: 3, Value: map[any]any{"k": []any{"v"}}, Attachments: map[string]string{"a": "b"}}).Bytes()),
		must(tb)((&Response{ID: 4, Exception: fmt.Errorf("boom")}).Bytes()),
	}
	for _, w := range []func(*buffer.IoBuffer) error{
		func(d *buffer.IoBuffer) error { return c.Heartbeat(d, 5) },
		func(d *buffer.IoBuffer) error { return c.GoAway(d, 6) },
		func(d *buffer.IoBuffer) error { return writeError(d, 7, StatusServiceNotFound, "no route") },
	} {
		var d buffer.IoBuffer
		if err := w(&d); err != nil {
			tb.Fatal(err)
		}
		out = append(out, bytes.Clone(d.Bytes()))
	}
	return out
}

func sameFrame(a, b *xprotocol.Frame) bool {
	if a.Kind != b.Kind || a.ID != b.ID || a.Status != b.Status || a.Timeout != b.Timeout || a.Proto != b.Proto ||
		!bytes.Equal(a.Service, b.Service) || !bytes.Equal(a.Method, b.Method) || !bytes.Equal(a.Raw, b.Raw) ||
		len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if !bytes.Equal(a.Headers[i].Key, b.Headers[i].Key) || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

func FuzzDecode(f *testing.F) {
	for _, cf := range captures(f) {
		f.Add(cf.raw)
	}
	for _, b := range builtFrames(f) {
		f.Add(b)
	}
	codecs := []*Codec{New(Options{MaxFrameSize: 1 << 16}), New(Options{MaxFrameSize: 1 << 16, EagerAttachments: true})}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range codecs {
			var fr xprotocol.Frame
			n, err := c.Decode(b, &fr)
			if err != nil || n == 0 {
				if n != 0 {
					t.Fatalf("Decode = %d with error %v", n, err)
				}
				continue
			}
			if n < HeaderLen || n > len(b) || !bytes.Equal(fr.Raw, b[:n]) {
				t.Fatalf("Decode consumed %d of %d bytes", n, len(b))
			}
			var out buffer.IoBuffer
			if err := c.Encode(&out, &fr); err != nil || !bytes.Equal(out.Bytes(), b[:n]) {
				t.Fatalf("Encode(Decode(b)) differs: %v", err)
			}
			var fr2 xprotocol.Frame
			if n2, err := c.Decode(out.Bytes(), &fr2); err != nil || n2 != n || !sameFrame(&fr, &fr2) {
				t.Fatalf("round trip: %d, %v\n%+v\n%+v", n2, err, fr, fr2)
			}
			// Everything the engine may do next must not panic either.
			_ = c.DecodeAttachments(&fr)
			_, _ = c.Attachments(&fr)
			_ = c.FrameError(&fr)
			_ = c.HTTPStatus(&fr)
			var w buffer.IoBuffer
			switch fr.Kind {
			case xprotocol.KindHeartbeat:
				_ = c.HeartbeatReply(&w, &fr)
			case xprotocol.KindRequest:
				if err := c.Hijack(&w, &fr, xprotocol.CauseNoRoute, string(fr.Service)); err != nil {
					t.Fatalf("Hijack: %v", err)
				}
			}
			if w.Len() > 0 {
				var r xprotocol.Frame
				if n, err := c.Decode(w.Bytes(), &r); err != nil || n != w.Len() || r.ID != fr.ID {
					t.Fatalf("reply does not decode: %d, %v", n, err)
				}
			}
			id := fr.ID + 1
			c.SetID(&fr, id)
			if fr.ID != id || len(fr.Raw) >= HeaderLen && fr.Raw[11] != byte(id) {
				t.Fatal("SetID did not patch the frame")
			}
		}
	})
}

// objectPrefix is a request body up to a descriptor of one Object argument: fuzzed bytes
// after it are the argument and the attachments.
var objectPrefix = func() []byte {
	e := hessian.NewEncoder()
	for _, s := range []string{"2.0.2", "com.example.S", "1.0.0", "m", "Ljava/lang/Object;"} {
		_ = e.Encode(s)
	}
	return e.Buffer()
}()

func FuzzHessianHeader(f *testing.F) {
	for _, cf := range captures(f) {
		f.Add(cf.raw[HeaderLen:])
	}
	f.Add([]byte{0x03, 'a', 'b', 'c'})
	f.Add([]byte{'R', 0, 1, 'a', 0x02, 0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80})
	f.Add([]byte("Ljava/lang/String;I[B"))
	f.Add([]byte{0x58, 'I', 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{'C', 0x00, 0x91, 0x01, 'a', 0x60, 0x90, 'H', 0x01, 'k', 0x60, 0x91, 'Z'})
	f.Add([]byte{'M', 0x03, 'f', 'o', 'o', 0x01, 'k', 'V', 0x90, 0x90, 'Z'})
	c := New(Options{MaxDepth: 16})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The string reader agrees with the library on value and length.
		if s, next, null, err := readString(b, 0); err == nil && len(b) <= 4096 {
			if got := libConsumed(b); got != next {
				t.Fatalf("readString consumed %d, library %d", next, got)
			}
			if v, lerr := hessian.NewDecoder(b).Decode(); lerr != nil || null != (v == nil) || !null && v.(string) != string(s) {
				t.Fatalf("readString = %q, library %q, %v", s, v, lerr)
			}
		}
		// The descriptor counter agrees with the library's regexp.
		if len(b) <= 256 {
			if got, want := countArgs(b), len(hessian.DescRegex.FindAllString(string(b), -1)); got != want {
				t.Fatalf("countArgs = %d, DescRegex %d", got, want)
			}
		}
		// Whatever the walker accepts, the library reads to the same end (or fails).
		w := newWalker(b, 16)
		if end, err := w.value(0, 0); err == nil && len(b) <= 4096 {
			if got := libConsumed(b[:end]); got != -1 && got != end {
				t.Fatalf("walker ends at %d, library at %d", end, got)
			}
		}
		// Attachment extraction never panics, on a whole body or after valid strings.
		for _, body := range [][]byte{b, slices.Concat(objectPrefix, b)} {
			var fr xprotocol.Frame
			raw := requestFrame(1, body)
			if n, err := c.Decode(raw, &fr); err != nil || n != len(raw) {
				t.Fatalf("Decode = %d, %v", n, err)
			}
			_ = c.DecodeAttachments(&fr)
		}
	})
}

// TestWriteSeeds regenerates testdata/fuzz seeds: DUBBO_WRITE_SEEDS=1 go test -run TestWriteSeeds.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("DUBBO_WRITE_SEEDS") == "" {
		t.Skip("set DUBBO_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, cf := range captures(t) {
		write("FuzzDecode", fmt.Sprintf("capture_%d", i), cf.raw)
		write("FuzzHessianHeader", fmt.Sprintf("capture_body_%d", i), cf.raw[HeaderLen:])
	}
	for i, b := range builtFrames(t) {
		write("FuzzDecode", fmt.Sprintf("built_%d", i), b)
	}
	for name, body := range map[string][]byte{
		"huge_list":        {0x58, 'I', 0x7f, 0xff, 0xff, 0xff},
		"huge_class":       {'C', 0x00, 'I', 0x7f, 0xff, 0xff, 0xff},
		"nested_lists":     append(bytes.Repeat([]byte{0x79}, 100), 'N'),
		"binary_map_key":   {'H', 0x21, 0x41, 0x01, 'v', 'Z'},
		"map_type_as_list": {'M', 0x03, 'f', 'o', 'o', 0x01, 'k', 'V', 0x90, 0x90, 'Z'},
		"typed_list_map":   {0x70, 'H', 'Z'},
		"lone_surrogate":   {0x02, 0xed, 0xa0, 0x80, 'A', 0x27, 0x00, 0x58, 'I', 0x7f, 0xff, 0xff, 0xff},
	} {
		write("FuzzHessianHeader", name, body)
		write("FuzzDecode", "hostile_"+name, requestFrame(1, slices.Concat(objectPrefix, body)))
	}
}
