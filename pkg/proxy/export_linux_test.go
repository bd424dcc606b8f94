package proxy

import h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"

// SetBodyDecided sets the hook the direct HTTP/2 → HTTP/1 path runs once it has decided
// whether a request has a body; the returned func removes it.
func SetBodyDecided(fn func(st *h2stream.ServerStream)) (restore func()) {
	bodyDecided = fn
	return func() { bodyDecided = nil }
}

// LoopIdle is the number of idle upstream connections in p's event-loop pools: the
// event-loop path kept them (the goroutine path pools elsewhere).
func LoopIdle(p *Proxy) int {
	n := 0
	p.loops.Range(func(_, v any) bool {
		lp := v.(*loopPool)
		done := make(chan int, 1)
		if lp.loop.Post(func() {
			k := 0
			for _, l := range lp.idle {
				k += len(l)
			}
			done <- k
		}) {
			n += <-done
		}
		return true
	})
	return n
}

// ParkedSignal returns a channel that gets a value each time an event loop parks a
// request for its filters' delay, until the test ends.
func ParkedSignal(t interface{ Cleanup(func()) }) <-chan struct{} {
	ch := make(chan struct{}, 16)
	f := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	parkedHook.Store(&f)
	t.Cleanup(func() { parkedHook.Store(nil) })
	return ch
}
