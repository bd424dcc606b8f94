package config

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Health check protocols (health_check.protocol), canonical spellings.
const (
	HealthCheckTCP  = "tcp"
	HealthCheckHTTP = "http"
)

// HealthCheckProtocols lists the accepted health_check.protocol values, matched
// case-insensitively; "" is tcp and MOSN's "Http1" is http.
var HealthCheckProtocols = []string{HealthCheckTCP, HealthCheckHTTP, ProtocolHTTP1}

// HealthCheckProtocol returns the canonical protocol ("tcp" or "http") for a
// health_check.protocol value, and false for an unknown one.
func HealthCheckProtocol(name string) (string, bool) {
	switch strings.ToLower(name) {
	case "", HealthCheckTCP:
		return HealthCheckTCP, true
	case HealthCheckHTTP, strings.ToLower(ProtocolHTTP1):
		return HealthCheckHTTP, true
	}
	return "", false
}

// Check reports h's problems, each with its path relative to the health_check block
// ("check_config.http_check_config.path"). Validate reports them under the cluster's path;
// the cluster package refuses a cluster whose health_check has errors.
func (h *HealthCheck) Check() (errs, warnings []Problem) {
	var r report
	proto, ok := HealthCheckProtocol(h.Protocol)
	if !ok {
		r.fail("protocol", fmt.Sprintf("unknown %q (known: %s)", h.Protocol, strings.Join(HealthCheckProtocols, ", ")))
	}
	positive(&r, "timeout", h.Timeout)
	positive(&r, "interval", h.Interval)
	if len(h.CommonCallbacks) > 0 {
		r.warn("common_callbacks", "MOSN health-check callbacks are not supported; ignored")
	}
	if h.EventLogPath != "" {
		r.warn("event_log_path", "health-check event logs are not supported; state changes go to the main log")
	}
	if cc := h.CheckConfig; cc != nil {
		if hc := cc.HTTP; hc != nil {
			p := "check_config.http_check_config"
			if ok && proto != HealthCheckHTTP {
				r.warn(p, "ignored: the protocol is tcp")
			}
			checkHTTPCheck(&r, p, hc)
		}
		if tc := cc.TCP; tc != nil {
			p := "check_config.tcp_check_config"
			if ok && proto != HealthCheckTCP {
				r.warn(p, "ignored: the protocol is http")
			}
			for _, f := range []struct{ key, val string }{{"send", tc.Send}, {"receive", tc.Receive}} {
				if _, err := hex.DecodeString(f.val); err != nil {
					r.fail(field(p, f.key), fmt.Sprintf("%q is not a hex string: %v", f.val, err))
				}
			}
		}
	}
	return r.errors, r.warnings
}

func checkHTTPCheck(r *report, p string, hc *HTTPCheckConfig) {
	if hc.Port > 65535 {
		r.fail(field(p, "port"), fmt.Sprintf("%d is not a port (1-65535, or 0 for the host's own)", hc.Port))
	}
	positive(r, field(p, "timeout"), hc.Timeout)
	if hc.Path != "" {
		if u, err := url.ParseRequestURI(hc.Path); err != nil || !strings.HasPrefix(hc.Path, "/") || u.Host != "" || hasSpaceOrCtl(hc.Path) {
			r.fail(field(p, "path"), fmt.Sprintf("%q is not a path starting with / (with an optional ?query)", hc.Path))
		}
	}
	if hc.Method != "" && !isToken(hc.Method) {
		r.fail(field(p, "method"), fmt.Sprintf("%q is not an HTTP method", hc.Method))
	}
	switch strings.ToLower(hc.Scheme) {
	case "", "http":
	case "https":
		r.fail(field(p, "scheme"), "https health checks are not supported (plain http only)")
	default:
		r.fail(field(p, "scheme"), fmt.Sprintf("unknown %q (known: http)", hc.Scheme))
	}
	if hasSpaceOrCtl(hc.Domain) {
		r.fail(field(p, "domain"), fmt.Sprintf("%q is not a valid Host header value", hc.Domain))
	}
	for i, c := range hc.Codes {
		cp := index(field(p, "codes"), i)
		switch {
		case c.Start < 100 || c.Start > 599:
			r.fail(field(cp, "start"), fmt.Sprintf("%d is outside 100-599", c.Start))
		case c.End < 100 || c.End > 599:
			r.fail(field(cp, "end"), fmt.Sprintf("%d is outside 100-599 (the range is inclusive: {\"start\":200,\"end\":200} is 200 only)", c.End))
		case c.End < c.Start:
			r.fail(field(cp, "end"), fmt.Sprintf("%d is below start %d", c.End, c.Start))
		}
	}
}

// Check reports o's problems, each with its path relative to the outlier_detection block.
func (o *OutlierDetection) Check() (errs []Problem) {
	var r report
	if o.Consecutive5xx != 0 && o.ConsecutiveErrors != 0 && o.Consecutive5xx != o.ConsecutiveErrors {
		r.fail("consecutive_errors", fmt.Sprintf("%d contradicts consecutive_5xx %d; set only one (consecutive_errors is the older name)", o.ConsecutiveErrors, o.Consecutive5xx))
	}
	positive(&r, "interval", o.Interval)
	positive(&r, "base_ejection_time", o.BaseEjectionTime)
	positive(&r, "max_ejection_time", o.MaxEjectionTime)
	if base, top := o.BaseEjectionTime.Or(DefaultOutlierBaseEjectionTime), o.MaxEjectionTime; top != nil && *top != 0 && time.Duration(*top) < base {
		r.fail("max_ejection_time", fmt.Sprintf("%v is shorter than base_ejection_time %v", *top, base))
	}
	if p := o.MaxEjectionPercent; p != nil && *p > 100 {
		r.fail("max_ejection_percent", fmt.Sprintf("%d is over 100", *p))
	}
	return r.errors
}

// Threshold returns the consecutive failures that eject a host: consecutive_5xx, else
// consecutive_errors, else the default 5.
func (o *OutlierDetection) Threshold() uint32 {
	switch {
	case o.Consecutive5xx != 0:
		return o.Consecutive5xx
	case o.ConsecutiveErrors != 0:
		return o.ConsecutiveErrors
	}
	return DefaultOutlierConsecutive5xx
}

// positive reports a duration that is set but zero (negative ones are decode errors).
func positive(r *report, path string, d *Duration) {
	if d != nil && *d <= 0 {
		r.fail(path, "must be positive")
	}
}

func hasSpaceOrCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// isToken reports whether s is an RFC 9110 token (an HTTP method).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
