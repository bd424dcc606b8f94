package proxy

import (
	"fmt"
	"time"
)

// requestHeaderTimeout reads extend_config.request_header_timeout (see extTimeout).
func requestHeaderTimeout(ext map[string]any) (time.Duration, error) {
	return extTimeout(ext, "request_header_timeout")
}

// requestBodyTimeout reads extend_config.request_body_timeout (see extTimeout).
func requestBodyTimeout(ext map[string]any) (time.Duration, error) {
	return extTimeout(ext, "request_body_timeout")
}

// extTimeout reads extend_config.<key>: a duration string ("10s") or integer nanoseconds
// (MOSN's style); absent: 0 (the proxy's default); "0s": no timeout (negative for
// pkg/proxy).
func extTimeout(ext map[string]any, key string) (time.Duration, error) {
	v, ok := ext[key]
	if !ok || v == nil {
		return 0, nil
	}
	var d time.Duration
	switch x := v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			return 0, fmt.Errorf("extend_config.%s: %w", key, err)
		}
	case float64:
		d = time.Duration(x)
	default:
		return 0, fmt.Errorf("extend_config.%s: want a duration string, got %T", key, v)
	}
	switch {
	case d < 0:
		return 0, fmt.Errorf("extend_config.%s: negative duration %v", key, d)
	case d == 0:
		return -1, nil
	}
	return d, nil
}
