package http1

import (
	"bytes"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// FuzzChunked decodes b as a chunked body, whole and fed in steps, and checks that both
// agree and never panic; then it encodes b as chunk data (chunk sizes from seed) and
// checks that decoding gives b back.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;a=b;c=\"d\\\"\"\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"5\nhello\r\n0\r\n\r\n",
		"fffffffffffffffff\r\n",
		"0\r\nA: b\r\nC: d\r\n\r\nGET / HTTP/1.1\r\n",
	} {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, seed uint16) {
		lim := Limits{MaxChunkLine: 64, MaxTrailerBytes: 256, MaxHeaders: 8}
		var whole ChunkedReader
		whole.Reset(lim)
		d1, rest1, err1 := fuzzDecode(t, &whole, b, 0)
		var split ChunkedReader
		split.Reset(lim)
		d2, rest2, err2 := fuzzDecode(t, &split, b, int(seed%13)+1)
		if (err1 == nil) != (err2 == nil) || !bytes.Equal(d1, d2) && err1 == nil || len(rest1) != len(rest2) && err1 == nil {
			t.Fatalf("whole: %q %v; split %d: %q %v", d1, err1, seed%13+1, d2, err2)
		}
		if err1 == nil && len(whole.Trailers) != len(split.Trailers) {
			t.Fatal("trailers differ")
		}

		// Encode b, decode it back.
		var enc buffer.IoBuffer
		step := int(seed%97) + 1
		for p := b; len(p) > 0; {
			k := min(step, len(p))
			AppendChunk(&enc, p[:k])
			p = p[k:]
		}
		if err := AppendLastChunk(&enc, Headers{{Name: []byte("X-T"), Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
		var r ChunkedReader
		data, rest, err := fuzzDecode(t, &r, enc.Bytes(), int(seed%7)+1)
		if err != nil || !bytes.Equal(data, b) || len(rest) != 0 || len(r.Trailers) != 1 {
			t.Fatalf("round trip: %q %v", data, err)
		}
	})
}

// fuzzDecode is decodeAll with bound checks on every step.
func fuzzDecode(t *testing.T, r *ChunkedReader, in []byte, step int) (data, rest []byte, err error) {
	avail := len(in)
	if step > 0 {
		avail = min(step, len(in))
	}
	for {
		d, c, done, err := r.Next(in[:avail])
		if c < 0 || c > avail || len(d) > c {
			t.Fatalf("consumed %d of %d, data %d", c, avail, len(d))
		}
		if err != nil {
			return data, in, err
		}
		data = append(data, d...)
		in, avail = in[c:], avail-c
		if done {
			return data, in, nil
		}
		if c == 0 && len(d) == 0 {
			if avail == len(in) {
				return data, in, errNeedMore
			}
			avail = len(in)
			if step > 0 {
				avail = min(avail+step, len(in))
			}
		}
	}
}

var errNeedMore = &Error{0, "test: need more at end of input"}
