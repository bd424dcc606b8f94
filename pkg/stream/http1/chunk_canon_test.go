package http1

import (
	"bytes"
	"io"
	"net/http/httputil"
	"testing"
)

// forwardCanonical runs in through a Canonical reader the way a proxy does: the input
// arrives in steps of step bytes (0: at once) into a buffer, NextCompact frames what is
// there, the gap is closed, and the framed prefix is "sent". It returns what was sent, the
// data decoded, the bytes left after the body, and the error.
func forwardCanonical(in []byte, step int, lim Limits) (out, data, rest []byte, err error) {
	var r ChunkedReader
	r.Reset(lim)
	r.Canonical = true
	var buf []byte
	fed := 0
	for {
		n := len(in) - fed
		if step > 0 {
			n = min(n, step)
		}
		buf = append(buf, in[fed:fed+n]...)
		fed += n
		k, w := 0, 0
		done := false
		for k < len(buf) {
			var d []byte
			prev := k
			d, k, w, done, err = r.NextCompact(buf, k, w)
			data = append(data, d...)
			if err != nil || done || k == prev {
				break
			}
		}
		if err != nil {
			return out, data, nil, err
		}
		out = append(out, buf[:w]...)
		buf = append(buf[:0], buf[k:]...)
		if done {
			return out, data, append(buf, in[fed:]...), nil
		}
		if fed == len(in) {
			return out, data, buf, io.ErrUnexpectedEOF
		}
	}
}

// TestChunkedCanonical: size lines with extensions, whitespace or more than 16 digits are
// rewritten to plain hex; plain ones (leading zeros and upper case included) pass as they
// are; data, the CRLFs and the trailer section are untouched; fed in steps of every size,
// the output and the data are the same.
func TestChunkedCanonical(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"5;a=b\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"5 ; a = \"x;y\"\r\nhello\r\n0;z\r\nT: v\r\n\r\n", "5\r\nhello\r\n0\r\nT: v\r\n\r\n"},
		{"000000000000000000000005\r\nhello\r\n0000\r\n\r\n", "5\r\nhello\r\n0000\r\n\r\n"},
		{"0005\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", "0005\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"},
		{"1\t;x\r\n!\r\n2;y\r\nab\r\n3;z\r\ncde\r\n0;w\r\n\r\n", "1\r\n!\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"},
	} {
		for step := 0; step <= len(c.in); step++ {
			out, data, rest, err := forwardCanonical([]byte(c.in+"NEXT"), step, Limits{})
			if err != nil || string(out) != c.want || string(rest) != "NEXT" {
				t.Fatalf("%q step %d: out %q rest %q err %v; want %q", c.in, step, out, rest, err, c.want)
			}
			got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(out)))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%q step %d: Go reads %q (%v), the reader decoded %q", c.in, step, got, err, data)
			}
		}
	}
}

// FuzzChunkedCanonical: whatever the reader accepts, forwarded canonically in steps, is
// read by Go's chunked reader as the same data, is framed canonically already (a second
// pass changes nothing), and is never longer than what came in.
func FuzzChunkedCanonical(f *testing.F) {
	for _, s := range []string{
		"5;a=b\r\nhello\r\n0\r\n\r\n",
		"0000000000000000000a ;x=\"q\"\r\n0123456789\r\n0 ;y\r\nA: b\r\n\r\n",
		"1\r\na\r\n1 \r\nb\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		lim := Limits{MaxChunkLine: 128, MaxTrailerBytes: 256, MaxHeaders: 8}
		out, data, rest, err := forwardCanonical(in, int(step%17), lim)
		if err != nil {
			return
		}
		var plain ChunkedReader
		plain.Reset(lim)
		want, wrest, werr := decodeAll(&plain, in, 0)
		if werr != nil || !bytes.Equal(want, data) || len(wrest) != len(rest) {
			t.Fatalf("canonical pass decoded %q (rest %d), plain %q (rest %d, %v)", data, len(rest), want, len(wrest), werr)
		}
		if len(out)+len(rest) > len(in) {
			t.Fatalf("out %d + rest %d bytes from %d", len(out), len(rest), len(in))
		}
		got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(out)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Go reads %q (%v) from %q; decoded %q", got, err, out, data)
		}
		again, _, _, err := forwardCanonical(out, 0, lim)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second pass changed %q to %q (%v)", out, again, err)
		}
	})
}
