package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// UnmarshalJSON accepts a Go duration string ("15s", "1.5s", "1h30m") or an integer number
// of nanoseconds (MOSN's tcp_proxy idle_timeout). Negative durations are rejected; null
// leaves the value unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	n, err := parseTree(b)
	if err != nil {
		return fmt.Errorf("invalid duration: %w", err)
	}
	switch n.kind {
	case kindNull:
		return nil
	case kindString:
		v, err := time.ParseDuration(n.str)
		if err != nil {
			return fmt.Errorf("invalid duration %q: want a string such as \"15s\" or \"1.5s\", or integer nanoseconds", n.str)
		}
		if v < 0 {
			return fmt.Errorf("negative duration %q", n.str)
		}
		*d = Duration(v)
		return nil
	case kindNumber:
		lit := string(b[n.start:n.end])
		if isFractional(b[n.start:n.end]) {
			return fmt.Errorf("invalid duration %s: a number must be whole nanoseconds; write a string such as \"1.5s\"", lit)
		}
		v, err := strconv.ParseInt(lit, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid duration %s: out of range", lit)
		}
		if v < 0 {
			return fmt.Errorf("negative duration %s", lit)
		}
		*d = Duration(v)
		return nil
	default:
		return fmt.Errorf("invalid duration: expected a string such as \"15s\" or integer nanoseconds, got %s", n.kind)
	}
}

// MarshalJSON writes the string form ("1m30s").
func (d Duration) MarshalJSON() ([]byte, error) {
	return appendString(nil, time.Duration(d).String()), nil
}

// String returns the time.Duration form.
func (d Duration) String() string { return time.Duration(d).String() }

// OriginalDstModes lists the string values of use_original_dst ("" is off).
var OriginalDstModes = []string{string(OriginalDstRedirect), string(OriginalDstTProxy)}

// UnmarshalJSON accepts "redirect", "tproxy" or "" (any case), or MOSN's older boolean:
// true is "redirect", false is off. Anything else is an error naming the allowed values.
func (o *OriginalDst) UnmarshalJSON(b []byte) error {
	n, err := parseTree(b)
	if err != nil {
		return fmt.Errorf("invalid use_original_dst: %w", err)
	}
	switch n.kind {
	case kindNull:
		return nil
	case kindBool:
		if n.boolean {
			*o = OriginalDstRedirect
		} else {
			*o = OriginalDstOff
		}
		return nil
	case kindString:
		switch v := OriginalDst(strings.ToLower(n.str)); v {
		case OriginalDstOff, OriginalDstRedirect, OriginalDstTProxy:
			*o = v
			return nil
		}
		return fmt.Errorf("unknown %q (known: \"redirect\", \"tproxy\", \"\" or false for off, true for redirect)", n.str)
	default:
		return fmt.Errorf("expected \"redirect\", \"tproxy\", \"\" or a boolean, got %s", n.kind)
	}
}

// Valid reports whether o is one of the known modes.
func (o OriginalDst) Valid() bool {
	return o == OriginalDstOff || o == OriginalDstRedirect || o == OriginalDstTProxy
}

// IsRegex reports whether Value is a regular expression. An explicit "regex" decides; when it
// is absent the value is a regex, as in MOSN's examples ({"name":"service","value":".*"}).
func (h HeaderMatcher) IsRegex() bool { return h.Regex == nil || *h.Regex }
