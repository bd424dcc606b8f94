package proxy

import (
	"unsafe"

	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// bstr views b as a string without copying; valid while b is unchanged.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// frameBody is how many of the bytes b, read after a message head (or after the bytes
// framed before), belong to a body framed as body, and whether they end it. remain is
// the Content-Length left (BodyLength), cr the chunked decoder (BodyChunked); a
// close-delimited body takes everything.
func frameBody(body http1.Body, b []byte, remain *int64, cr *http1.ChunkedReader) (k int, done bool, err error) {
	switch body {
	case http1.BodyNone:
		return 0, true, nil
	case http1.BodyLength:
		k = int(min(int64(len(b)), *remain))
		*remain -= int64(k)
		return k, *remain == 0, nil
	case http1.BodyChunked:
		for k < len(b) {
			_, used, d, err := cr.Next(b[k:])
			if err != nil {
				return k, false, err
			}
			k += used
			if d {
				return k, true, nil
			}
			if used == 0 {
				break
			}
		}
		return k, false, nil
	}
	return len(b), false, nil // BodyClose
}
