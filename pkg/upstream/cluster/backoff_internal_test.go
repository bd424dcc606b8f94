package cluster

import (
	"testing"
	"time"
)

func TestDNSBackoff(t *testing.T) {
	lo := func() uint64 { return 0 }
	hi := func() uint64 { return ^uint64(0) }
	for _, tc := range []struct {
		rate   time.Duration
		n      int
		lo, hi time.Duration // jitter bounds: [d/2, d]
	}{
		{5 * time.Second, 1, 5 * time.Second, 10 * time.Second},
		{5 * time.Second, 2, 10 * time.Second, 20 * time.Second},
		{5 * time.Second, 3, 20 * time.Second, 40 * time.Second},
		{5 * time.Second, 4, 30 * time.Second, time.Minute}, // capped at 1 min
		{5 * time.Second, 60, 30 * time.Second, time.Minute},
		{5 * time.Minute, 3, 150 * time.Second, 5 * time.Minute}, // never rarer than success
	} {
		if got := backoff(tc.rate, tc.n, lo); got != tc.lo {
			t.Errorf("backoff(%v, %d) low = %v; want %v", tc.rate, tc.n, got, tc.lo)
		}
		if got := backoff(tc.rate, tc.n, hi); got < tc.lo || got > tc.hi {
			t.Errorf("backoff(%v, %d) high = %v; want in [%v, %v]", tc.rate, tc.n, got, tc.lo, tc.hi)
		}
	}
}
