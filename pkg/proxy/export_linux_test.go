package proxy

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
