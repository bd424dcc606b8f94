package tcpproxy_test

import "testing"

// BenchmarkTCPProxyLoopConnect is BenchmarkTCPProxyConnect with the listener on an event
// loop (ServeRaw): a whole session per op.
func BenchmarkTCPProxyLoopConnect(b *testing.B) {
	loopMode.Store(b, true)
	defer loopMode.Delete(b)
	BenchmarkTCPProxyConnect(b)
}
