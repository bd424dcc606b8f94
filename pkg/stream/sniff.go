package stream

// h2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Sniff identifies the protocol a downstream connection speaks from its first bytes,
// among the built-in protocols in Auto's fixed order: the HTTP/2 preface, bolt v1 (0x01),
// bolt v2 (0x02), dubbo's magic (0xdabb), then an HTTP/1 request line. Only protocols in
// allowed are considered (nil or empty: all). more is true when peek is a prefix of some
// allowed protocol's signature and more bytes are needed to decide; p is "" when nothing
// allowed matches. A Registry filled by RegisterBuiltins sniffs the same way.
func Sniff(peek []byte, allowed []Protocol) (p Protocol, more bool) {
	return sniff(builtinMatches, peek, allowed)
}

// matchEntry is a protocol's matcher in sniffing order.
type matchEntry struct {
	name  Protocol
	match Matcher
}

// sniff runs the allowed matchers of es in order. The first match wins unless an earlier
// matcher still needs more bytes.
func sniff(es []matchEntry, peek []byte, allowed []Protocol) (p Protocol, more bool) {
	if len(peek) == 0 {
		return "", true
	}
	for i := range es {
		e := &es[i]
		if !isAllowed(e.name, allowed) {
			continue
		}
		ok, need := e.match(peek)
		switch {
		case need:
			more = true
		case ok && more:
			return "", true
		case ok:
			return e.name, false
		}
	}
	return "", more
}

func isAllowed(p Protocol, allowed []Protocol) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		if a == p {
			return true
		}
	}
	return false
}

// MatchHTTP2 matches the HTTP/2 client preface. A prefix of it needs more: "PRI " also
// starts an HTTP/1 request line, so the whole preface is waited for.
func MatchHTTP2(peek []byte) (ok, more bool) {
	n := min(len(peek), len(h2Preface))
	if string(peek[:n]) != h2Preface[:n] {
		return false, false
	}
	return n == len(h2Preface), n < len(h2Preface)
}

// MatchBolt matches bolt v1's protocol byte 0x01.
func MatchBolt(peek []byte) (ok, more bool) { return firstByte(peek, 0x01) }

// MatchBoltV2 matches bolt v2's protocol byte 0x02.
func MatchBoltV2(peek []byte) (ok, more bool) { return firstByte(peek, 0x02) }

// MatchDubbo matches dubbo's magic 0xdabb.
func MatchDubbo(peek []byte) (ok, more bool) {
	if len(peek) == 0 || peek[0] != 0xda {
		return false, len(peek) == 0
	}
	if len(peek) < 2 {
		return false, true
	}
	return peek[1] == 0xbb, false
}

func firstByte(peek []byte, b byte) (ok, more bool) {
	if len(peek) == 0 {
		return false, true
	}
	return peek[0] == b, false
}
