package accesslog

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Spec is one configured access log: a listener's access_logs[i].
type Spec struct {
	Path   string // file path, "stdout" or "stderr"
	Format string // log_format; "" is DefaultFormat
}

// RequestView gives the request values a format may capture. router.Request and the
// protocol views satisfy it.
type RequestView interface {
	Header(name string) (string, bool)
	Variable(name string) (string, bool)
}

// HeaderGetter gives response header values.
type HeaderGetter interface {
	Get(name string) (string, bool)
}

// Logs is a listener's access logs: compiled formats and their writers. It is immutable
// and safe for concurrent use; Close it when the listener goes away. Sessions that outlive
// the Close (a drain that timed out) see it disabled.
type Logs struct {
	keys    keys
	formats []*format
	writers []*Writer
	closed  atomic.Bool
}

// New compiles every format and opens every writer. The error names the index of the
// bad spec ("access_logs[1].log_format: ...").
func New(specs []Spec, o Options) (*Logs, error) {
	l := &Logs{}
	for i, s := range specs {
		f, err := compile(s.Format, &l.keys)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("access_logs[%d].log_format: %w", i, err)
		}
		if s.Path == "" {
			l.Close()
			return nil, fmt.Errorf("access_logs[%d].log_path: missing", i)
		}
		w, err := Open(s.Path, o)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("access_logs[%d].log_path: %w", i, err)
		}
		l.formats = append(l.formats, f)
		l.writers = append(l.writers, w)
	}
	return l, nil
}

// Enabled reports whether l writes anything; a nil Logs is valid and disabled.
func (l *Logs) Enabled() bool { return l != nil && len(l.formats) > 0 && !l.closed.Load() }

// CaptureRequest copies the request values the formats use into i. Call it while the
// request head is valid.
func (l *Logs) CaptureRequest(i *Info, r RequestView) {
	if !l.Enabled() {
		return
	}
	i.req = i.capture(i.req, len(l.keys.req), func(k int) (string, bool) {
		key := l.keys.req[k]
		if key.header {
			return r.Header(key.name)
		}
		return r.Variable(key.name)
	})
}

// CaptureResponse copies the response header values the formats use into i.
func (l *Logs) CaptureResponse(i *Info, h HeaderGetter) {
	if !l.Enabled() || len(l.keys.resp) == 0 {
		return
	}
	i.resp = i.capture(i.resp, len(l.keys.resp), func(k int) (string, bool) { return h.Get(l.keys.resp[k]) })
}

// Log renders i with every format and queues the lines. shard spreads concurrent
// writers over the writer's buffers (pass a connection id).
func (l *Logs) Log(i *Info, shard uint64) {
	if !l.Enabled() {
		return
	}
	for k, f := range l.formats {
		i.line = f.render(i.line[:0], i)
		i.line = append(i.line, '\n')
		l.writers[k].Write(i.line, shard)
	}
}

// Flush writes out the queued lines and waits for them (tests, shutdown).
func (l *Logs) Flush() {
	if l == nil {
		return
	}
	for _, w := range l.writers {
		w.Flush()
	}
}

// Close flushes and releases the writers, once. A line a session renders after it is
// dropped with the closed writer.
func (l *Logs) Close() error {
	if l == nil || l.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, w := range l.writers {
		errs = append(errs, w.Close())
	}
	return errors.Join(errs...)
}
