package router

import (
	"strconv"
	"strings"
	"time"
)

// RequestTimeout is the timeout of req on the route: Timeout, except for a gRPC request
// (content-type application/grpc, or application/grpc+proto and the like) on a route with
// max_grpc_timeout, which Envoy times by the client's deadline instead: its grpc-timeout
// header less grpc_timeout_offset (when the header is longer than the offset), capped at
// max_grpc_timeout. No header, one that does not parse, a zero value, or one too large
// for a time.Duration means no deadline from the client, so max_grpc_timeout alone
// applies (0: none). It reads two headers only on such routes.
func (rt *Route) RequestTimeout(req Request) time.Duration {
	if rt == nil {
		return 0
	}
	if !rt.grpcTimeouts {
		return rt.timeout
	}
	if ct, _ := req.Header("content-type"); !IsGRPC(ct) {
		return rt.timeout
	}
	var d time.Duration
	if v, ok := req.Header("grpc-timeout"); ok {
		d, _ = ParseGRPCTimeout(v)
	}
	if d > 0 && rt.grpcOffset > 0 && d > rt.grpcOffset {
		d -= rt.grpcOffset
	}
	if rt.grpcMax > 0 && (d == 0 || d > rt.grpcMax) {
		d = rt.grpcMax
	}
	return d
}

// GRPCTimeouts reports whether the route times gRPC requests by their grpc-timeout
// header (max_grpc_timeout is set).
func (rt *Route) GRPCTimeouts() bool { return rt != nil && rt.grpcTimeouts }

// FormatGRPCTimeout writes d as a grpc-timeout value: milliseconds, rounded up, or the
// smallest larger unit whose count fits the header's 8 digits.
func FormatGRPCTimeout(d time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		sym  string
	}{{time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}, {time.Hour, "H"}} {
		n := d / u.unit
		if d%u.unit != 0 {
			n++
		}
		if n <= 99999999 {
			return strconv.FormatInt(int64(n), 10) + u.sym
		}
	}
	return "99999999H"
}

// IsGRPC reports whether a content-type names gRPC: "application/grpc", alone or
// followed by "+" or ";" (gRPC over HTTP/2's spec).
func IsGRPC(ct string) bool {
	const g = "application/grpc"
	if len(ct) < len(g) || !strings.EqualFold(ct[:len(g)], g) {
		return false
	}
	return len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';'
}

// ParseGRPCTimeout parses a grpc-timeout header value: 1 to 8 ASCII digits and a unit,
// H, M, S, m (milliseconds), u (microseconds) or n (nanoseconds). It reports false for
// anything else. A value beyond time.Duration's range (99999999H is about 11,400 years)
// is the largest Duration: no overflow, and callers cap it.
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxDuration/unit) {
		return maxDuration, true
	}
	return time.Duration(n) * unit, true
}

const maxDuration = time.Duration(1<<63 - 1)
