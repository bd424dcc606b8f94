package dubbo

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

func TestReadStringAgreesWithLibrary(t *testing.T) {
	for _, s := range []string{
		"", "a", "com.example.EchoService", strings.Repeat("y", 31), strings.Repeat("y", 32), strings.Repeat("z", 1023),
		strings.Repeat("z", 1024), strings.Repeat("w", 4096), strings.Repeat("w", 4097), strings.Repeat("v", 70000),
		"é", "com.例子.服务", "😀", "a😀b𝄞c", strings.Repeat("😀", 3000), strings.Repeat("é", 5000),
	} {
		enc := hessianBytes(t, s)
		got, next, null, err := readString(enc, 0)
		if err != nil || null || string(got) != s || next != len(enc) {
			t.Errorf("readString(len %d %q...) = %q..., %d of %d, %v", len(s), head(s), head(string(got)), next, len(enc), err)
		}
		_, _, plain, _, _ := stringAt(enc, 0)
		wantPlain := !strings.ContainsFunc(s, func(r rune) bool { return r > 0xffff }) && len([]rune(s)) <= 4096
		if plain != wantPlain {
			t.Errorf("len %d: plain %v, want %v", len(s), plain, wantPlain)
		}
		if plain && len(got) > 0 && &got[0] != &enc[len(enc)-len(got)] {
			t.Errorf("len %d: plain string does not alias the input", len(s))
		}
	}
}

func head(s string) string { return s[:min(len(s), 20)] }

func TestReadStringRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errShort},
		{"int", []byte{0x90}, errNotString},
		{"short data", []byte{0x03, 'a', 'b'}, errShort},
		{"short 0x30 header", []byte{0x30}, errShort},
		{"short S header", []byte{'S', 0}, errShort},
		{"4-byte utf-8", []byte{0x02, 0xf0, 0x9f, 0x98, 0x80}, errBadUTF8},
		{"continuation lead", []byte{0x01, 0x80}, errBadUTF8},
		{"lone high surrogate", []byte{0x02, 0xed, 0xa0, 0x80, 'A', 'B', 'C'}, errSurrogate},
		{"high surrogate as last unit", []byte{0x01, 0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80}, errSurrogate},
		{"chunk then int", []byte{'R', 0, 1, 'a', 0x90}, errBadChunk},
		{"chunk then end", []byte{'R', 0, 1, 'a'}, errShort},
		{"truncated pair", []byte{0x02, 0xed, 0xa0, 0x80, 0xed}, errShort},
	} {
		if _, _, _, err := readString(tc.in, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	// Accepted oddities, as every reference decoder accepts them: a lone low surrogate,
	// unchecked continuation bytes, a chunked value of small chunks.
	for _, in := range [][]byte{{0x01, 0xed, 0xb0, 0x80}, {0x01, 0xc3, 0x41}, {'R', 0, 2, 'a', 'b', 0x01, 'c'}} {
		if _, next, _, err := readString(in, 0); err != nil || next != len(in) {
			t.Errorf("readString(% x) = %d, %v", in, next, err)
		}
	}
	if s, _, _, _ := readString([]byte{'R', 0, 2, 'a', 'b', 'R', 0, 0, 0x01, 'c'}, 0); string(s) != "abc" {
		t.Errorf("chunks joined to %q", s)
	}
}

func TestCountArgsMatchesDescRegex(t *testing.T) {
	for _, d := range []string{
		"", "I", "IJZ", "Ljava/lang/String;", "Ljava/lang/String;I[B", "[[Ljava/util/Map;[I", "Ljava.lang.String;",
		"L1;", "Lfoo", "[", "[[", "[L;", "LZ", "L$a/_b9;Lx;", "hello world", "V", "[Lcom/example/User;Ljava/util/List;[[D",
		"L/a;", "La//b;", "La/;", "éLa;",
	} {
		if got, want := countArgs([]byte(d)), len(hessian.DescRegex.FindAllString(d, -1)); got != want {
			t.Errorf("countArgs(%q) = %d, DescRegex finds %d", d, got, want)
		}
	}
}

// libConsumed decodes one value with the library and returns how many bytes it consumed
// (inputs up to the bufio size only), or -1 when it failed or panicked.
func libConsumed(b []byte) (n int) {
	defer func() {
		if recover() != nil {
			n = -1
		}
	}()
	d := hessian.NewDecoder(b)
	if _, err := d.Decode(); err != nil {
		return -1
	}
	return len(b) - d.Buffered()
}

func TestWalkerConsumesWhatLibraryConsumes(t *testing.T) {
	u := &user{Name: "ann", Age: 3, Tags: []string{"x"}}
	for _, v := range []any{
		nil, true, int32(0), int32(-1), int32(2000), int32(-300000), int32(1 << 30), int64(5), int64(-2000), int64(1 << 20), int64(1 << 40),
		0.0, 1.0, 12.0, 300.0, 1.5, 1e300, "s", strings.Repeat("q", 2000), []byte{}, []byte("abc"), bytes.Repeat([]byte{1}, 2000),
		[]any{}, []any{"a", int32(1), nil}, []string{"a", "b"}, []int32{1, 2, 3}, map[any]any{"k": "v", int32(1): []any{"n"}},
		map[string]string{"a": "b"}, u, []any{u, u}, map[any]any{"u": u}, []any{[]any{[]any{[]any{"deep"}}}},
	} {
		b := hessianBytes(t, v)
		w := newWalker(b, DefaultMaxDepth)
		end, err := w.value(0, 0)
		if err != nil || end != len(b) {
			t.Errorf("%T %v: walker %d of %d, %v", v, v, end, len(b), err)
		}
		if lib := libConsumed(b); lib != end {
			t.Errorf("%T: library consumed %d, walker %d", v, lib, end)
		}
	}
}

// hostile builds a request whose attachments slot holds body, after a descriptor of args
// arguments (the body then holds the arguments too).
func hostile(t *testing.T, desc string, body []byte) []byte {
	return requestFrame(1, requestBody(t, "com.example.S", "m", desc, body...))
}

func TestHostileBodiesFailOnlyTheRequest(t *testing.T) {
	deepLists := append(bytes.Repeat([]byte{0x79}, 5<<20), 'N') // 5 MiB of nested one-element lists
	classChain := append(bytes.Repeat([]byte{'C', 0x00, 0x90}, 1<<20), 'N')
	for _, tc := range []struct {
		name  string
		raw   []byte
		panic bool // the library panics on it (recovered)
	}{
		// These crash the process inside the library (stack overflow, out of memory: fatal,
		// not panics); the walker refuses them before the library sees them.
		{"deeply nested lists", hostile(t, "Ljava/util/List;", deepLists), false},
		{"class definition chain", hostile(t, "Ljava/lang/Object;", classChain), false},
		{"untyped list of 2^31 elements", hostile(t, "Ljava/util/List;", []byte{0x58, 'I', 0x7f, 0xff, 0xff, 0xff}), false},
		{"class with 2^31 fields", hostile(t, "Ljava/lang/Object;", []byte{'C', 0x00, 'I', 0x7f, 0xff, 0xff, 0xff}), false},
		{"negative list length", hostile(t, "Ljava/util/List;", []byte{0x58, 0x8f}), false},
		// Malformed but bounded.
		{"typed list whose type is a map", hostile(t, "Ljava/util/List;", []byte{0x70, 'H', 'Z'}), false},
		{"object of an undefined class", hostile(t, "Ljava/lang/Object;", []byte{0x60}), false},
		{"attachments are a string", hostile(t, "", []byte{0x01, 'x'}), false},
		{"map without end", hostile(t, "", []byte{'H', 0x01, 'k', 0x01, 'v'}), false},
		{"lone H", hostile(t, "", []byte{'H'}), false},
		{"unknown tag", hostile(t, "I", []byte{0x40}), false},
		{"null descriptor", requestFrame(1, append(hessianBytes(t, "2.0.2", "s", "1", "m"), 'N', 'H', 'Z')), false},
		// Walk fine, then make the library panic.
		{"binary map key", hostile(t, "", []byte{'H', 0x21, 0x41, 0x01, 'v', 'Z'}), true},
		{"list typed by a map type ref", hostile(t, "", []byte{'M', 0x03, 'f', 'o', 'o', 0x01, 'k', 'V', 0x90, 0x90, 'Z'}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{})
			f := decodeOne(t, c, tc.raw)
			if f.Kind != xprotocol.KindRequest || string(f.Service) != "com.example.S" && string(f.Service) != "s" || c.FrameError(f) != nil {
				t.Fatalf("Decode: kind %d service %q err %v", f.Kind, f.Service, c.FrameError(f))
			}
			err := c.DecodeAttachments(f)
			if !errors.Is(err, ErrBody) || errors.Is(err, ErrDecoderPanic) != tc.panic {
				t.Fatalf("DecodeAttachments = %v (panic expected: %v)", err, tc.panic)
			}
			if ferr := c.FrameError(f); !errors.Is(ferr, ErrBody) || errors.Is(ferr, ErrDecoderPanic) != tc.panic {
				t.Fatalf("FrameError = %v", ferr)
			}
			if err2 := c.DecodeAttachments(f); !errors.Is(err2, ErrBody) {
				t.Fatalf("second DecodeAttachments = %v", err2)
			}
			// Eager mode records the same failure without failing Decode.
			g := decodeOne(t, New(Options{EagerAttachments: true}), tc.raw)
			if !errors.Is(New(Options{}).FrameError(g), ErrBody) {
				t.Fatal("eager decode did not mark the frame")
			}
		})
	}
}

func TestMaxDepthOption(t *testing.T) {
	nest := func(n int) []byte {
		return append(append(bytes.Repeat([]byte{0x79}, n), 'N'), 'H', 'Z')
	}
	c := New(Options{MaxDepth: 10})
	if err := c.DecodeAttachments(decodeOne(t, c, hostile(t, "Ljava/util/List;", nest(10)))); err != nil {
		t.Fatalf("depth 10: %v", err)
	}
	if err := c.DecodeAttachments(decodeOne(t, c, hostile(t, "Ljava/util/List;", nest(11)))); !errors.Is(err, ErrBody) {
		t.Fatalf("depth 11: %v", err)
	}
}

// Attachments that refer to a class defined in the arguments need the arguments' context:
// the library then decodes from the descriptor on.
func TestAttachmentsReferringToArguments(t *testing.T) {
	u := &user{Name: "ann"}
	body := hessianBytes(t, "2.0.2", "com.example.UserService", "1.0.0", "save", "Lcom/example/User;", u,
		map[any]any{"group": "g", "owner": &user{Name: "bob"}, "timeout": "250"})
	raw := requestFrame(1, body)
	start, end, nargs, flat, err := walkRequest(raw, int(decodeOne(t, New(Options{}), raw).Proto[protoDesc]), DefaultMaxDepth)
	if err != nil || flat || nargs != 1 || end != len(raw) || start >= end {
		t.Fatalf("walkRequest = %d %d %d %v %v", start, end, nargs, flat, err)
	}
	c := New(Options{})
	f := decodeOne(t, c, raw)
	if err := c.DecodeAttachments(f); err != nil || header(f, "group") != "g" || f.Timeout.Milliseconds() != 250 {
		t.Fatalf("DecodeAttachments = %v; group %q timeout %v", err, header(f, "group"), f.Timeout)
	}
	if _, ok := f.Header("owner"); ok {
		t.Error("object-valued attachment became a header")
	}
}

// An out-of-range ref reads as null in the library (and so as ""), not as an error.
func TestBogusRefIsNull(t *testing.T) {
	c := New(Options{})
	f := decodeOne(t, c, hostile(t, "", []byte{'H', 0x01, 'k', 0x51, 0x9f, 0x01, 'g', 0x01, 'x', 'Z'}))
	if err := c.DecodeAttachments(f); err != nil || header(f, "g") != "x" {
		t.Fatalf("DecodeAttachments = %v, headers %q", err, f.Headers)
	}
	if v, ok := f.Header("k"); !ok || len(v) != 0 {
		t.Fatalf("k = %q, %v", v, ok)
	}
}

func TestNoOrNullAttachments(t *testing.T) {
	c := New(Options{})
	for _, raw := range [][]byte{
		requestFrame(1, requestBody(t, "s", "m", "I", 0x91)),
		requestFrame(1, requestBody(t, "s", "m", "I", 0x91, 'N')),
	} {
		f := decodeOne(t, c, raw)
		if m, err := c.Attachments(f); err != nil || len(m) != 0 {
			t.Fatalf("Attachments = %v, %v", m, err)
		}
	}
}
