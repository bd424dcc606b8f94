package proxy

import (
	"fmt"
	"time"
)

// requestHeaderTimeout reads extend_config.request_header_timeout: a duration string
// ("10s") or integer nanoseconds (MOSN's style); absent: 0 (the proxy's default); "0s":
// no timeout (negative for pkg/proxy).
func requestHeaderTimeout(ext map[string]any) (time.Duration, error) {
	v, ok := ext["request_header_timeout"]
	if !ok || v == nil {
		return 0, nil
	}
	var d time.Duration
	switch x := v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			return 0, fmt.Errorf("extend_config.request_header_timeout: %w", err)
		}
	case float64:
		d = time.Duration(x)
	default:
		return 0, fmt.Errorf("extend_config.request_header_timeout: want a duration string, got %T", v)
	}
	switch {
	case d < 0:
		return 0, fmt.Errorf("extend_config.request_header_timeout: negative duration %v", d)
	case d == 0:
		return -1, nil
	}
	return d, nil
}
