package lb_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

// BenchmarkPick measures Pick followed by done for every balancer; all are 0 allocs/op.
func BenchmarkPick(b *testing.B) {
	for _, n := range lb.Builtins() {
		for _, size := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/%d", n.Name, size), func(b *testing.B) {
				hs := lbtest.Hosts(addrs(size)...)
				p := n.Factory(hs, lb.Options{})
				r := &lb.Request{HasHash: true, OriginalDst: netip.MustParseAddrPort(hs[size/2].Addr())}
				di := lb.DoneInfo{Latency: time.Millisecond}
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					r.HashKey++
					_, done, err := p.Pick(ctx, r)
					if err != nil {
						b.Fatal(err)
					}
					done(di)
				}
			})
		}
	}
}

// BenchmarkPickParallel is Pick+done from GOMAXPROCS goroutines over 100 hosts: the shared
// atomics (rotation counters, in-flight counts) are the only contention.
func BenchmarkPickParallel(b *testing.B) {
	for _, n := range lb.Builtins() {
		b.Run(n.Name, func(b *testing.B) {
			hs := lbtest.Hosts(addrs(100)...)
			p := n.Factory(hs, lb.Options{})
			ctx := b.Context()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := &lb.Request{HasHash: true, OriginalDst: netip.MustParseAddrPort(hs[50].Addr())}
				di := lb.DoneInfo{Latency: time.Millisecond}
				for pb.Next() {
					r.HashKey++
					_, done, err := p.Pick(ctx, r)
					if err != nil {
						b.Error(err)
						return
					}
					done(di)
				}
			})
		})
	}
}
