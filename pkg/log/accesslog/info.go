package accesslog

import (
	"net/netip"
	"strconv"
	"time"
)

// Flag is a response flag: why a request did not get an upstream's answer (Envoy's and
// MOSN's short codes).
type Flag uint32

// Response flags.
const (
	FlagNoRoute         Flag = 1 << iota // NR: no route matched
	FlagNoHealthyHost                    // UH: no healthy upstream host
	FlagConnectFailure                   // UF: upstream connection failure
	FlagOverflow                         // UO: circuit breaker open
	FlagUpstreamTimeout                  // UT: upstream request timeout
	FlagUpstreamReset                    // UR: upstream closed or reset the connection
	FlagDownstreamReset                  // DC: downstream connection ended mid-request
	FlagFaultAbort                       // FI: fault filter aborted the request
	FlagFaultDelay                       // DI: fault filter delayed the request
	FlagEntityTooLarge                   // RE: request body over the payload limit
	FlagUnauthorized                     // UAEX: denied by an access filter
	FlagLocalReply                       // LR: another local answer (direct response, filter)
	FlagBadRequest                       // BR: the request could not be parsed
	FlagNoCluster                        // NC: the route's cluster does not exist
)

var flagNames = [...]string{"NR", "UH", "UF", "UO", "UT", "UR", "DC", "FI", "DI", "RE", "UAEX", "LR", "BR", "NC"}

// AppendFlags appends the flags' codes, comma-separated, or "-" for none.
func AppendFlags(dst []byte, f Flag) []byte {
	if f == 0 {
		return append(dst, '-')
	}
	first := true
	for i, n := range flagNames {
		if f&(1<<i) == 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, n...)
	}
	return dst
}

// Info is what one request leaves for the access log. Keep one per connection (or
// stream) and Reset it per request; its storage is reused.
type Info struct {
	Start            time.Time
	RequestReceived  time.Duration // start → request fully received (0: not yet)
	ResponseReceived time.Duration // start → response head received (0: none)
	Finished         time.Duration // start → response fully sent; set by Log when zero
	BytesReceived    uint64        // request bytes read from downstream (head + body)
	BytesSent        uint64        // response bytes written downstream (head + body)
	Protocol         string
	ResponseCode     int
	Flags            Flag
	DownstreamLocal  netip.AddrPort
	DownstreamRemote netip.AddrPort
	UpstreamLocal    netip.AddrPort
	UpstreamHost     string
	UpstreamCluster  string
	RouteName        string
	FailureReason    string

	vals []byte
	req  []span
	resp []span
	line []byte
}

type span struct{ start, end int32 } // end < 0: absent

// Reset clears the request fields and keeps the storage.
func (i *Info) Reset() {
	vals, req, resp, line := i.vals[:0], i.req[:0], i.resp[:0], i.line[:0]
	*i = Info{vals: vals, req: req, resp: resp, line: line}
}

func (i *Info) capture(dst []span, n int, get func(int) (string, bool)) []span {
	for len(dst) < n {
		dst = append(dst, span{})
	}
	dst = dst[:n]
	for k := 0; k < n; k++ {
		v, ok := get(k)
		if !ok {
			dst[k] = span{-1, -1}
			continue
		}
		s := int32(len(i.vals))
		i.vals = append(i.vals, v...)
		dst[k] = span{s, int32(len(i.vals))}
	}
	return dst
}

func (i *Info) value(s []span, slot int) ([]byte, bool) {
	if slot >= len(s) || s[slot].end < 0 {
		return nil, false
	}
	return i.vals[s[slot].start:s[slot].end], true
}

// render appends f's line for i to dst.
func (f *format) render(dst []byte, i *Info) []byte {
	for _, p := range f.parts {
		switch p.id {
		case varLiteral:
			dst = append(dst, p.lit...)
		case varStartTime:
			dst = i.Start.AppendFormat(dst, "2006/01/02 15:04:05.000")
		case varRequestReceived:
			dst = AppendDuration(dst, i.RequestReceived)
		case varResponseReceived:
			dst = AppendDuration(dst, i.ResponseReceived)
		case varRequestFinished, varDuration:
			dst = AppendDuration(dst, i.Finished)
		case varBytesSent:
			dst = strconv.AppendUint(dst, i.BytesSent, 10)
		case varBytesReceived:
			dst = strconv.AppendUint(dst, i.BytesReceived, 10)
		case varProtocol:
			dst = appendOr(dst, i.Protocol)
		case varResponseCode:
			dst = strconv.AppendInt(dst, int64(i.ResponseCode), 10)
		case varResponseFlag:
			dst = AppendFlags(dst, i.Flags)
		case varUpstreamLocal:
			dst = appendAddr(dst, i.UpstreamLocal)
		case varDownstreamLocal:
			dst = appendAddr(dst, i.DownstreamLocal)
		case varDownstreamRemote:
			dst = appendAddr(dst, i.DownstreamRemote)
		case varUpstreamHost:
			dst = appendOr(dst, i.UpstreamHost)
		case varUpstreamCluster:
			dst = appendOr(dst, i.UpstreamCluster)
		case varFailureReason:
			dst = appendOr(dst, i.FailureReason)
		case varRouteName:
			dst = appendOr(dst, i.RouteName)
		case varServerName:
			dst = append(dst, '-')
		case varRequestSlot:
			v, ok := i.value(i.req, p.slot)
			dst = appendEscaped(dst, v, ok)
		case varResponseSlot:
			v, ok := i.value(i.resp, p.slot)
			dst = appendEscaped(dst, v, ok)
		}
	}
	return dst
}

func appendOr(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, '-')
	}
	return append(dst, s...)
}

func appendAddr(dst []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return append(dst, '-')
	}
	return a.AppendTo(dst)
}

const hexDigits = "0123456789abcdef"

// appendEscaped writes v with control bytes, non-ASCII bytes, '"' and '\' as \xHH, so a
// client cannot forge log lines or fields.
func appendEscaped(dst, v []byte, ok bool) []byte {
	if !ok {
		return append(dst, '-')
	}
	for _, c := range v {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// AppendDuration appends d as time.Duration.String does ("1.5ms", "2m3.25s"), without
// allocating.
func AppendDuration(dst []byte, d time.Duration) []byte {
	if d == 0 {
		return append(dst, '0', 's')
	}
	u := uint64(d)
	if d < 0 {
		dst = append(dst, '-')
		u = -u
	}
	if u < uint64(time.Second) {
		var unit string
		var div uint64
		switch {
		case u < uint64(time.Microsecond):
			return append(strconv.AppendUint(dst, u, 10), 'n', 's')
		case u < uint64(time.Millisecond):
			unit, div = "µs", uint64(time.Microsecond)
		default:
			unit, div = "ms", uint64(time.Millisecond)
		}
		dst = appendFrac(dst, u, div)
		return append(dst, unit...)
	}
	h := u / uint64(time.Hour)
	u -= h * uint64(time.Hour)
	m := u / uint64(time.Minute)
	u -= m * uint64(time.Minute)
	if h > 0 {
		dst = append(strconv.AppendUint(dst, h, 10), 'h')
	}
	if h > 0 || m > 0 {
		dst = append(strconv.AppendUint(dst, m, 10), 'm')
	}
	dst = appendFrac(dst, u, uint64(time.Second))
	return append(dst, 's')
}

// appendFrac appends v/div with the fraction's trailing zeros trimmed.
func appendFrac(dst []byte, v, div uint64) []byte {
	dst = strconv.AppendUint(dst, v/div, 10)
	frac := v % div
	if frac == 0 {
		return dst
	}
	var digits [20]byte
	n := 0
	for d := div / 10; d > 0; d /= 10 {
		digits[n] = byte('0' + frac/d%10)
		n++
	}
	for n > 0 && digits[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, digits[:n]...)
}
