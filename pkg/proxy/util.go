package proxy

import (
	"unsafe"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// idempotent reports whether a request method is idempotent (RFC 9110 9.2.2). Only such
// a request is sent again on a new connection after a reused one broke before any answer
// byte: the upstream may have read the request and acted on it, and Go's Transport and
// nginx do not resend a POST then either.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// bstr views b as a string without copying; valid while b is unchanged.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// frameBody is how many of the bytes b, read after a message head (or after the bytes
// framed before), belong to a body framed as body, and whether they end it. remain is
// the Content-Length left (BodyLength), cr the chunked decoder (BodyChunked, Canonical
// set); a close-delimited body takes everything. A chunked body is re-framed in place as
// it goes (http1.ChunkedReader.NextCompact): b[:k] is what to forward, and the bytes after
// it moved down by cut, so the caller's buffer ends cut bytes earlier.
func frameBody(body http1.Body, b []byte, remain *int64, cr *http1.ChunkedReader) (k, cut int, done bool, err error) {
	switch body {
	case http1.BodyNone:
		return 0, 0, true, nil
	case http1.BodyLength:
		k = int(min(int64(len(b)), *remain))
		*remain -= int64(k)
		return k, 0, *remain == 0, nil
	case http1.BodyChunked:
		r, w := 0, 0
		for r < len(b) {
			prev := r
			_, r, w, done, err = cr.NextCompact(b, r, w)
			if err != nil || done || r == prev {
				break
			}
		}
		if w < r {
			copy(b[w:], b[r:])
		}
		return w, r - w, done, err
	}
	return len(b), 0, false, nil // BodyClose
}

// dropGap closes the gap a re-framed chunked body left in b: the bytes framed so far are
// b's first k, the undecoded rest starts at r (k <= r) and moves down to k.
func dropGap(b *buffer.IoBuffer, k, r int) {
	if k < r {
		p := b.Bytes()
		n := copy(p[k:], p[r:])
		b.Truncate(k + n)
	}
}
