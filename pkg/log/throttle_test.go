package log

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestThrottle(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := zap.New(core)
	th := Throttle{Every: time.Hour}
	for i := 0; i < 5; i++ {
		th.Log(l, zapcore.WarnLevel, "upstream down")
	}
	entries := logs.All()
	if len(entries) != 5 || entries[0].Level != zapcore.WarnLevel {
		t.Fatalf("entries = %v", entries)
	}
	for _, e := range entries[1:] {
		if e.Level != zapcore.DebugLevel {
			t.Fatalf("a line inside the interval was logged at %v", e.Level)
		}
	}
	th.next.Store(0) // the interval has passed
	th.Log(l, zapcore.WarnLevel, "upstream down")
	last := logs.All()[5]
	if last.Level != zapcore.WarnLevel || last.ContextMap()["suppressed"] != int64(4) {
		t.Fatalf("next line = %v %v; want warn with suppressed=4", last.Level, last.ContextMap())
	}
}
