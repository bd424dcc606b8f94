package log

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Throttle lets one line through at its level per interval and sends the rest to debug;
// the next line let through carries the count it held back ("suppressed"). It keeps a
// failing upstream under load from logging once per connection or datagram. The zero
// value allows one line a second. Safe for concurrent use; no allocation when the line
// is dropped.
type Throttle struct {
	Every      time.Duration
	next       atomic.Int64 // unix nanos
	suppressed atomic.Int64
}

// Log writes msg at lvl when the interval allows, else at debug.
func (t *Throttle) Log(l *zap.Logger, lvl zapcore.Level, msg string, fields ...zap.Field) {
	if n, ok := t.allow(); ok {
		if n > 0 {
			fields = append(fields, zap.Int64("suppressed", n))
		}
	} else {
		lvl = zapcore.DebugLevel
	}
	if ce := l.Check(lvl, msg); ce != nil {
		ce.Write(fields...)
	}
}

func (t *Throttle) allow() (suppressed int64, ok bool) {
	every := t.Every
	if every <= 0 {
		every = time.Second
	}
	now := time.Now().UnixNano()
	next := t.next.Load()
	if now < next || !t.next.CompareAndSwap(next, now+int64(every)) {
		t.suppressed.Add(1)
		return 0, false
	}
	return t.suppressed.Swap(0), true
}
