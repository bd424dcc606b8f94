package http1

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// decodeAll runs r over in, feeding at most step bytes more each time it needs them (0:
// all at once), as a connection would. It returns the data, the bytes left after the
// body and the error.
func decodeAll(r *ChunkedReader, in []byte, step int) (data, rest []byte, err error) {
	avail := len(in)
	if step > 0 {
		avail = min(step, len(in))
	}
	for {
		d, c, done, err := r.Next(in[:avail])
		data = append(data, d...)
		in, avail = in[c:], avail-c
		if err != nil {
			return data, in, err
		}
		if done {
			return data, in, nil
		}
		if c == 0 && len(d) == 0 {
			if avail == len(in) {
				return data, in, errors.New("need more at end of input")
			}
			if step > 0 {
				avail = min(avail+step, len(in))
			} else {
				avail = len(in)
			}
		}
	}
}

func TestChunkedDecode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		data     string
		trailers string // "name=value;..." expected
		err      *Error
	}{
		{name: "simple", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", data: "hello world"},
		{name: "empty body", in: "0\r\n\r\n"},
		{name: "hex sizes", in: "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", data: "0123456789abcdefghij"},
		{name: "leading zeros", in: "0003\r\nabc\r\n000\r\n\r\n", data: "abc"},
		{name: "extensions", in: "3;name=val;flag ; q=\"a b\\\"c\"\r\nabc\r\n0;last\r\n\r\n", data: "abc"},
		{name: "extension bws", in: "3 ; a = b\r\nabc\r\n0\r\n\r\n", data: "abc"},
		{name: "trailers", in: "3\r\nabc\r\n0\r\nX-Sum: 1\r\ngrpc-status:  0 \r\n\r\n", data: "abc", trailers: "X-Sum=1;grpc-status=0;"},
		{name: "binary data with CRLF", in: "4\r\n\r\n\n\r\r\n0\r\n\r\n", data: "\r\n\n\r"},

		{name: "bare LF after size", in: "5\nhello\r\n0\r\n\r\n", err: ErrBareLF},
		{name: "bare LF after last chunk", in: "5\r\nhello\r\n0\n\r\n", err: ErrBareLF},
		{name: "LF in extension", in: "5;a\nb\r\nhello\r\n0\r\n\r\n", err: ErrBareLF},
		{name: "CR in extension", in: "5;a\rb\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExtension},
		{name: "bare LF after data", in: "5\r\nhello\n0\r\n\r\n", err: ErrMissingChunkCRLF},
		{name: "no CRLF after data", in: "5\r\nhelloX\r\n0\r\n\r\n", err: ErrMissingChunkCRLF},
		{name: "CR then garbage after data", in: "5\r\nhello\rX0\r\n\r\n", err: ErrMissingChunkCRLF},
		{name: "data longer than size", in: "3\r\nhello\r\n0\r\n\r\n", err: ErrMissingChunkCRLF},
		{name: "empty size", in: "\r\nhello\r\n", err: ErrBadChunkSize},
		{name: "negative size", in: "-5\r\nhello\r\n", err: ErrBadChunkSize},
		{name: "0x prefix", in: "0x5\r\nhello\r\n", err: ErrBadChunkSize},
		{name: "garbage after size", in: "5g\r\nhello\r\n", err: ErrBadChunkSize},
		{name: "space before size", in: " 5\r\nhello\r\n", err: ErrBadChunkSize},
		{name: "trailing space", in: "5 \r\nhello\r\n", err: ErrBadChunkExtension},
		{name: "overflow", in: "8000000000000000\r\n", err: ErrChunkSizeOverflow},
		{name: "overflow long", in: "fffffffffffffffffff\r\n", err: ErrChunkSizeOverflow},
		{name: "bad extension name", in: "5;=x\r\nhello\r\n", err: ErrBadChunkExtension},
		{name: "bad extension value", in: "5;a=\r\nhello\r\n", err: ErrBadChunkExtension},
		{name: "unterminated quote", in: "5;a=\"x\r\nhello\r\n", err: ErrBadChunkExtension},
		{name: "ctl in quote", in: "5;a=\"\x01\"\r\nhello\r\n", err: ErrBadChunkExtension},
		{name: "trailer bad name", in: "0\r\nBad Name: x\r\n\r\n", err: ErrBadHeaderName},
		{name: "trailer bare LF", in: "0\r\nX: y\n\r\n", err: ErrBareLF},
		{name: "trailer obs-fold", in: "0\r\nX: y\r\n z\r\n\r\n", err: ErrObsFold},
		{name: "trailer NUL", in: "0\r\nX: \x00\r\n\r\n", err: ErrBadHeaderValue},
		{name: "trailer section bare CR", in: "0\r\n\rX", err: ErrBareCR},
		{name: "trailer section bare LF", in: "0\r\n\n", err: ErrBareLF},
	} {
		for _, step := range []int{0, 1, 2, 3, 7} {
			var r ChunkedReader
			data, rest, err := decodeAll(&r, []byte(tc.in+"NEXT"), step)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || StatusCode(err) != 400 {
					t.Fatalf("%s step %d: err %v; want %v", tc.name, step, err, tc.err)
				}
				continue
			}
			if err != nil || string(data) != tc.data || string(rest) != "NEXT" || !r.Done() || r.BodyBytes() != int64(len(tc.data)) {
				t.Fatalf("%s step %d: data %q rest %q err %v", tc.name, step, data, rest, err)
			}
			var tr strings.Builder
			for _, f := range r.Trailers {
				tr.WriteString(string(f.Name) + "=" + string(f.Value) + ";")
			}
			if tr.String() != tc.trailers {
				t.Fatalf("%s step %d: trailers %q; want %q", tc.name, step, tr.String(), tc.trailers)
			}
			// Done is sticky and consumes nothing more.
			if d, c, done, err := r.Next([]byte("NEXT")); d != nil || c != 0 || !done || err != nil {
				t.Fatalf("%s: after done: %q %d %v %v", tc.name, d, c, done, err)
			}
		}
	}
}

// TestChunkedSplitEveryOffset: every split of the input in two gives the same data.
func TestChunkedSplitEveryOffset(t *testing.T) {
	in := []byte("5;e=\"q\"\r\nhello\r\n1a\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nT: v\r\n\r\n")
	var whole ChunkedReader
	want, _, err := decodeAll(&whole, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k <= len(in); k++ {
		var r ChunkedReader
		var got []byte
		b := in[:k]
		fed := k
		for {
			d, c, done, err := r.Next(b)
			if err != nil {
				t.Fatalf("split %d: %v", k, err)
			}
			got = append(got, d...)
			b = b[c:]
			if done {
				break
			}
			if c == 0 && len(d) == 0 {
				if fed == len(in) {
					t.Fatalf("split %d: stuck", k)
				}
				b = append(append([]byte(nil), b...), in[fed:]...)
				fed = len(in)
			}
		}
		if !bytes.Equal(got, want) || len(r.Trailers) != 1 || string(r.Trailers[0].Value) != "v" {
			t.Fatalf("split %d: %q", k, got)
		}
	}
}

func TestChunkedZeroCopy(t *testing.T) {
	in := []byte("5\r\nhello\r\n0\r\n\r\n")
	var r ChunkedReader
	d, c, _, err := r.Next(in)
	if err != nil || string(d) != "hello" || &d[0] != &in[3] || cap(d) != len(d) || c != 10 {
		t.Fatalf("data %q c %d err %v, aliasing %v", d, c, err, &d[0] == &in[3])
	}
}

func TestChunkedLimits(t *testing.T) {
	run := func(in string, lim Limits) error {
		var r ChunkedReader
		r.Reset(lim)
		_, _, err := decodeAll(&r, []byte(in), 0)
		return err
	}
	ext := func(n int) string { return "5;" + strings.Repeat("e", n) }
	// Chunk line: at the limit (CRLF included) passes, one over fails, complete or not.
	if err := run(ext(100-4)+"\r\nhello\r\n0\r\n\r\n", Limits{MaxChunkLine: 100}); err != nil {
		t.Fatalf("line at limit: %v", err)
	}
	if err := run(ext(100-3)+"\r\nhello\r\n0\r\n\r\n", Limits{MaxChunkLine: 100}); !errors.Is(err, ErrChunkLineTooLong) {
		t.Fatalf("line over limit: %v", err)
	}
	var r ChunkedReader
	if _, _, _, err := r.Next([]byte(ext(DefaultMaxChunkLine))); !errors.Is(err, ErrChunkLineTooLong) {
		t.Fatalf("unterminated long line: %v", err)
	}
	// Trailer section size and count.
	tr := "0\r\nX: " + strings.Repeat("v", 100-len("0\r\nX: \r\n\r\n")+3) + "\r\n\r\n"
	if err := run(tr, Limits{MaxTrailerBytes: 100}); err != nil {
		t.Fatalf("trailers at limit: %v", err)
	}
	if err := run(strings.Replace(tr, "X:", "XY:", 1), Limits{MaxTrailerBytes: 100}); !errors.Is(err, ErrTrailerTooLarge) || StatusCode(err) != 431 {
		t.Fatalf("trailers over limit: %v", err)
	}
	if err := run("0\r\n"+strings.Repeat("A: b\r\n", 4)+"\r\n", Limits{MaxHeaders: 3}); !errors.Is(err, ErrTooManyHeaders) {
		t.Fatalf("too many trailers: %v", err)
	}
	r = ChunkedReader{}
	if _, _, _, err := r.Next([]byte("0\r\n" + strings.Repeat("v", DefaultMaxTrailerBytes))); !errors.Is(err, ErrTrailerTooLarge) {
		t.Fatalf("unterminated trailers: %v", err)
	}
	// Body limit (row 9): checked when a chunk is declared, before its data arrives.
	if err := run("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", Limits{MaxBodyBytes: 10}); err != nil {
		t.Fatalf("body at limit: %v", err)
	}
	r.Reset(Limits{MaxBodyBytes: 10})
	_, _, err := decodeAll(&r, []byte("5\r\nhello\r\n6\r\n"), 0)
	if !errors.Is(err, ErrBodyTooLarge) || StatusCode(err) != 413 {
		t.Fatalf("body over limit: %v", err)
	}
}

func TestChunkedEncoderRoundTrip(t *testing.T) {
	var b buffer.IoBuffer
	AppendChunk(&b, []byte("hello"))
	AppendChunk(&b, nil) // no-op
	AppendChunkHeader(&b, 300)
	_, _ = b.Write(bytes.Repeat([]byte("x"), 300))
	AppendChunkEnd(&b)
	if err := AppendLastChunk(&b, Headers{{Name: []byte("X-T"), Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	want := "5\r\nhello\r\n12c\r\n" + strings.Repeat("x", 300) + "\r\n0\r\nX-T: 1\r\n\r\n"
	if string(b.Bytes()) != want {
		t.Fatalf("encoded %q", b.Bytes())
	}
	var r ChunkedReader
	data, rest, err := decodeAll(&r, b.Bytes(), 0)
	if err != nil || string(data) != "hello"+strings.Repeat("x", 300) || len(rest) != 0 || len(r.Trailers) != 1 {
		t.Fatalf("decode: %q %v", data, err)
	}
	if err := AppendLastChunk(&b, Headers{{Name: []byte("X"), Value: []byte("a\nb")}}); !errors.Is(err, ErrBadEdit) {
		t.Fatalf("bad trailer: %v", err)
	}
}

func TestChunkedAllocs(t *testing.T) {
	var enc buffer.IoBuffer
	AppendChunk(&enc, bytes.Repeat([]byte("a"), 1024))
	_ = AppendLastChunk(&enc, Headers{{Name: []byte("X"), Value: []byte("y")}})
	in := enc.Bytes()
	var r ChunkedReader
	dst := buffer.NewPool().NewBuffer(2048)
	n := testing.AllocsPerRun(100, func() {
		r.Reset(Limits{})
		b := in
		for {
			_, c, done, err := r.Next(b)
			if err != nil {
				t.Fatal(err)
			}
			b = b[c:]
			if done {
				break
			}
		}
		dst.Reset()
		AppendChunk(dst, in[:100])
		_ = AppendLastChunk(dst, r.Trailers)
	})
	if n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
