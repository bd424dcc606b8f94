package testutil

import (
	"runtime"
	"strings"
)

// Goroutines returns how many goroutines of the process have fn on their stack: a function
// as runtime stacks print it, e.g. "xprotocol.(*upConn).tickLoop" or
// "pkg/proxy.(*Proxy).ServeConn". Tests poll it (Eventually) to see the goroutines of a
// connection end, which goleak at the end of a package would not tell apart.
func Goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	k := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn+"(") {
			k++
		}
	}
	return k
}
