// Package log builds mosnlite's zap loggers and holds the field keys shared by all
// packages, so log lines can be searched by the same names everywhere.
package log

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Field keys used across packages.
const (
	FieldListener = "listener"
	FieldCluster  = "cluster"
	FieldHost     = "host"
	FieldConnID   = "conn_id"
	FieldRemote   = "remote"
	FieldReason   = "reason"
	FieldProtocol = "protocol"
	FieldPath     = "path"
)

// Options selects level and encoding.
type Options struct {
	Level  string // debug, info, warn, error (MOSN's DEBUG/INFO/WARN/ERROR/FATAL/TRACE accepted)
	Format string // "console" (default) or "json"
	Output string // "stdout", "stderr" (default) or a file path
}

// ParseLevel accepts zap's level names and MOSN's (TRACE maps to debug, FATAL to error).
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return zapcore.InfoLevel, nil
	case "debug", "trace":
		return zapcore.DebugLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error", "fatal", "critical":
		return zapcore.ErrorLevel, nil
	}
	return zapcore.InfoLevel, fmt.Errorf("unknown log level %q (known: debug, info, warn, error)", s)
}

// New returns the root logger and the AtomicLevel that changes its level at run time.
func New(o Options) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := ParseLevel(o.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, err
	}
	level := zap.NewAtomicLevelAt(lvl)
	cfg := zap.NewProductionConfig()
	cfg.Level = level
	cfg.Sampling = nil
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	switch o.Format {
	case "", "console":
		cfg.Encoding = "console"
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	case "json":
		cfg.Encoding = "json"
	default:
		return nil, level, fmt.Errorf("unknown log format %q (known: console, json)", o.Format)
	}
	out := o.Output
	if out == "" {
		out = "stderr"
	}
	cfg.OutputPaths = []string{out}
	cfg.ErrorOutputPaths = []string{"stderr"}
	l, err := cfg.Build()
	if err != nil {
		return nil, level, fmt.Errorf("build logger: %w", err)
	}
	return l, level, nil
}
