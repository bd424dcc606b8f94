package stream

import "bytes"

// h2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Sniff identifies the protocol a downstream connection speaks from its first bytes, in
// Auto's fixed order: the HTTP/2 preface, bolt v1 (0x01), bolt v2 (0x02), dubbo's magic
// (0xdabb), then an HTTP/1 request line. Only protocols in allowed are considered (nil or
// empty: all). more is true when peek is a prefix of some allowed protocol's signature
// and more bytes are needed to decide; p is "" when nothing allowed matches.
func Sniff(peek []byte, allowed []Protocol) (p Protocol, more bool) {
	ok := func(x Protocol) bool {
		if len(allowed) == 0 {
			return true
		}
		for _, a := range allowed {
			if a == x {
				return true
			}
		}
		return false
	}
	if len(peek) == 0 {
		return "", true
	}
	if ok(HTTP2) {
		n := min(len(peek), len(h2Preface))
		if bytes.Equal(peek[:n], []byte(h2Preface[:n])) {
			if n == len(h2Preface) {
				return HTTP2, false
			}
			// "PRI " is also a valid HTTP/1 request line start: wait for the whole preface.
			more = true
		}
	}
	switch peek[0] {
	case 0x01:
		if ok(Bolt) {
			return Bolt, false
		}
	case 0x02:
		if ok(BoltV2) {
			return BoltV2, false
		}
	case 0xda:
		if ok(Dubbo) {
			if len(peek) < 2 {
				return "", true
			}
			if peek[1] == 0xbb {
				return Dubbo, false
			}
		}
	}
	if more {
		return "", true
	}
	if ok(HTTP1) {
		if yes, need := SniffHTTP1(peek); yes {
			return HTTP1, false
		} else if need {
			return "", true
		}
	}
	return "", false
}
