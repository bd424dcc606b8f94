package accesslog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options tune the writers. Zero fields take the defaults.
type Options struct {
	ShardBytes    int           // buffer per shard; a line that does not fit is dropped (default 256 KiB)
	FlushInterval time.Duration // default 200ms
	// Log receives a warning (at most every 10s) when lines were dropped, and an error
	// when the file fails; nil: none. The first Open of a path decides.
	Log *zap.Logger
}

const (
	shards              = 8
	defaultShardBytes   = 256 << 10
	defaultFlushEvery   = 200 * time.Millisecond
	maxLineForShardFrac = 2 // a shard over 1/2 full wakes the flusher early
)

// Writer is an asynchronous, bounded line writer for one path, shared by every Logs that
// names the path (reference counted). Write never blocks on I/O: it appends the line to
// one of a few shard buffers under that shard's own lock (connections spread over the
// shards, so no single lock is shared by all of them) and drops the line, counting it,
// when the shard is full. One goroutine per path writes the shards out every
// FlushInterval, sooner when a shard fills up, and on Close.
type Writer struct {
	path  string
	out   io.Writer
	file  *os.File // nil for stdout/stderr
	limit int
	every time.Duration

	shards   [shards]shard
	kick     chan struct{}
	flushReq chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	dropped  atomic.Uint64
	written  atomic.Uint64
	refs     int // guarded by openMu
	failed   atomic.Bool
	log      *zap.Logger
}

type shard struct {
	mu  sync.Mutex
	buf []byte
	_   [40]byte // keep shards on separate cache lines
}

var (
	openMu sync.Mutex
	open   = map[string]*Writer{}
)

// Open returns the writer for path, opening the file (and its directory) on first use.
// Every Open needs one Close.
func Open(path string, o Options) (*Writer, error) {
	openMu.Lock()
	defer openMu.Unlock()
	if w, ok := open[path]; ok {
		w.refs++
		return w, nil
	}
	w := &Writer{path: path, limit: o.ShardBytes, every: o.FlushInterval, refs: 1,
		kick: make(chan struct{}, 1), flushReq: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	w.log = o.Log
	if w.log == nil {
		w.log = zap.NewNop()
	}
	if w.limit <= 0 {
		w.limit = defaultShardBytes
	}
	if w.every <= 0 {
		w.every = defaultFlushEvery
	}
	switch path {
	case "stdout":
		w.out = os.Stdout
	case "stderr":
		w.out = os.Stderr
	default:
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("access log %s: %w", path, err)
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		w.file, w.out = f, f
	}
	open[path] = w
	go w.run()
	return w, nil
}

// Write queues line (which must end with '\n'); it copies line and never blocks on I/O.
func (w *Writer) Write(line []byte, shardKey uint64) {
	s := &w.shards[shardKey%shards]
	s.mu.Lock()
	if len(s.buf)+len(line) > w.limit {
		s.mu.Unlock()
		w.dropped.Add(1)
		w.wake()
		return
	}
	if s.buf == nil {
		s.buf = make([]byte, 0, w.limit)
	}
	s.buf = append(s.buf, line...)
	full := len(s.buf) > w.limit/maxLineForShardFrac
	s.mu.Unlock()
	if full {
		w.wake()
	}
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Dropped counts the lines dropped because a buffer was full (or the file failed).
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Written counts the bytes written out.
func (w *Writer) Written() uint64 { return w.written.Load() }

func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTicker(w.every)
	defer t.Stop()
	spare := make([]byte, 0, w.limit)
	var reported uint64
	last := time.Now()
	for {
		if d := w.dropped.Load(); d != reported && time.Since(last) >= 10*time.Second {
			w.log.Warn("access log: lines dropped, the writer is behind", zap.String("path", w.path), zap.Uint64("dropped_total", d))
			reported, last = d, time.Now()
		}
		select {
		case <-w.stop:
			w.flush(&spare)
			return
		case <-t.C:
		case <-w.kick:
		case ack := <-w.flushReq:
			w.flush(&spare)
			close(ack)
			continue
		}
		w.flush(&spare)
	}
}

// flush swaps each shard's buffer with spare and writes it out.
func (w *Writer) flush(spare *[]byte) {
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		if len(s.buf) == 0 {
			s.mu.Unlock()
			continue
		}
		b := s.buf
		s.buf = (*spare)[:0]
		s.mu.Unlock()
		n, err := w.out.Write(b)
		w.written.Add(uint64(n))
		if err != nil && !w.failed.Swap(true) {
			w.log.Error("access log: write failed; further errors not reported", zap.String("path", w.path), zap.Error(err))
		}
		*spare = b[:0]
	}
}

// Flush writes out what is queued now and waits for it (tests, shutdown).
func (w *Writer) Flush() {
	done := make(chan struct{})
	select {
	case w.flushReq <- done:
		<-done
	case <-w.done:
	}
}

// Close drops one reference; the last one flushes, stops the goroutine and closes the file.
func (w *Writer) Close() error {
	openMu.Lock()
	w.refs--
	last := w.refs == 0
	if last {
		delete(open, w.path)
	}
	openMu.Unlock()
	if !last {
		return nil
	}
	close(w.stop)
	<-w.done
	if w.file != nil {
		return w.file.Close()
	}
	return nil
}
