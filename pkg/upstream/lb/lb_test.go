package lb_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pickAddr(t testing.TB, p lb.Picker, r *lb.Request) string {
	t.Helper()
	h, done, err := p.Pick(t.Context(), r)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	done(lb.DoneInfo{})
	return h.Addr()
}

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)
	}
	return out
}

func TestBuiltinsMatchConfigNames(t *testing.T) {
	var names []string
	for _, n := range lb.Builtins() {
		names = append(names, n.Name)
		if n.Factory == nil {
			t.Fatalf("%s: nil factory", n.Name)
		}
		// Every balancer answers ErrNoHost over an empty set.
		if _, _, err := n.Factory(nil, lb.Options{}).Pick(t.Context(), &lb.Request{}); !errors.Is(err, lb.ErrNoHost) {
			t.Errorf("%s over no hosts: err = %v; want ErrNoHost", n.Name, err)
		}
	}
	if !slices.Equal(names, config.LBTypes) {
		t.Fatalf("Builtins names %v; config.LBTypes %v", names, config.LBTypes)
	}
}

func TestRoundRobinExactOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		rand uint64
		want []string
	}{
		{"start at first", 0, []string{"a", "b", "c", "a", "b", "c", "a"}},
		{"start offset from Rand", 1 << 63, []string{"b", "c", "a", "b", "c", "a", "b"}}, // ⌊3·2^63/2^64⌋ = 1
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := lb.NewRoundRobin(lbtest.Hosts("a", "b", "c"), lb.Options{Rand: lbtest.FixedRand(tc.rand)})
			var got []string
			for range tc.want {
				got = append(got, pickAddr(t, p, &lb.Request{}))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("picks %v; want %v", got, tc.want)
			}
		})
	}
}

// TestRandomUniform: 30000 picks over 3 hosts; expectation 10000 each, sd ≈ 81.6, so
// ±500 is beyond 6 sd (and the seed is fixed).
func TestRandomUniform(t *testing.T) {
	p := lb.NewRandom(lbtest.Hosts("a", "b", "c"), lb.Options{Rand: lbtest.SeededRand(1)})
	c := map[string]int{}
	for range 30000 {
		c[pickAddr(t, p, &lb.Request{})]++
	}
	for _, h := range []string{"a", "b", "c"} {
		if c[h] < 9500 || c[h] > 10500 {
			t.Fatalf("random spread %v: want each in [9500,10500]", c)
		}
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	names := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		weights []uint32
		cycle   int    // picks per cycle after gcd reduction
		seq     string // exact first cycle with Rand 0, if checked
	}{
		{"1:2:3", []uint32{1, 2, 3}, 6, "cbacbc"},
		{"smooth 5:1:1", []uint32{5, 1, 1}, 7, "aaabcaa"},
		{"gcd reduced 100:200:300", []uint32{100, 200, 300}, 6, "cbacbc"},
		{"zero weight counts as 1", []uint32{0, 1, 2}, 4, ""},
		{"beyond schedule cap (stride)", []uint32{10007, 10009, 1}, 20017, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := lb.NewWeightedRoundRobin(lbtest.Weighted(names, tc.weights), lb.Options{Rand: lbtest.FixedRand(0)})
			seq := make([]string, 3*tc.cycle)
			for i := range seq {
				seq[i] = pickAddr(t, p, &lb.Request{})
			}
			if tc.seq != "" {
				got := ""
				for _, s := range seq[:tc.cycle] {
					got += s
				}
				if got != tc.seq {
					t.Fatalf("first cycle %s; want %s", got, tc.seq)
				}
			}
			// Any window of one cycle holds each host exactly its reduced weight.
			g := uint32(0)
			for _, w := range tc.weights {
				g = gcdU(g, max(w, 1))
			}
			for _, off := range []int{0, 1, tc.cycle / 2, tc.cycle - 1} {
				c := map[string]uint32{}
				for _, s := range seq[off : off+tc.cycle] {
					c[s]++
				}
				for i, n := range names {
					if want := max(tc.weights[i], 1) / g; c[n] != want {
						t.Fatalf("window at %d: %s picked %d; want %d (counts %v)", off, n, c[n], want, c)
					}
				}
			}
		})
	}
}

func gcdU(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// hold picks until want is returned and keeps that pick in flight; it returns its done.
func hold(t *testing.T, p lb.Picker, want string) func(lb.DoneInfo) {
	t.Helper()
	for range 1000 {
		h, done, err := p.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() == want {
			return done
		}
		done(lb.DoneInfo{})
	}
	t.Fatalf("host %s never picked", want)
	return nil
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	for _, n := range []int{2, 3, 10} { // 2: every host compared; 3, 10: two random choices
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			hosts := addrs(n)
			p := lb.NewLeastRequest(lbtest.Hosts(hosts...), lb.Options{Rand: lbtest.SeededRand(2)})
			done := hold(t, p, hosts[0])
			for range 500 {
				if got := pickAddr(t, p, &lb.Request{}); got == hosts[0] {
					t.Fatalf("picked the busy host %s", got)
				}
			}
			done(lb.DoneInfo{})
			seen := map[string]bool{}
			for range 500 {
				seen[pickAddr(t, p, &lb.Request{})] = true
			}
			if !seen[hosts[0]] {
				t.Fatal("host never picked again once idle")
			}
		})
	}
}

func TestLeastRequestWeighted(t *testing.T) {
	// a has weight 10 and one request in flight: cost 2/10 < b's 1/1, so a still wins.
	hs := lbtest.Weighted([]string{"a", "b"}, []uint32{10, 1})
	p := lb.NewLeastRequest(hs, lb.Options{Rand: lbtest.SeededRand(3)})
	done := hold(t, p, "a")
	defer done(lb.DoneInfo{})
	for range 100 {
		if got := pickAddr(t, p, &lb.Request{}); got != "a" {
			t.Fatalf("picked %s; want the heavy host a", got)
		}
	}
}

func TestLeastConnection(t *testing.T) {
	hs := lbtest.Hosts("a", "b", "c")
	hs[0].Stats().ConnOpened()
	hs[0].Stats().ConnOpened()
	hs[1].Stats().ConnOpened()
	p := lb.NewLeastConnection(hs, lb.Options{Rand: lbtest.SeededRand(4)})
	c := map[string]int{}
	for range 300 {
		c[pickAddr(t, p, &lb.Request{})]++
	}
	// P2C over 3 hosts: c (0 conns) wins whenever drawn (2/3), b beats a otherwise.
	if c["a"] != 0 || c["b"] == 0 || c["c"] < 150 {
		t.Fatalf("least connection spread %v; want a=0, some b, c≥150", c)
	}
}

func TestChoiceCountScansAll(t *testing.T) {
	// ChoiceCount 5 ≥ 4 hosts: every pick compares all hosts, so only the idle one wins.
	hs := lbtest.Hosts("a", "b", "c", "d")
	p := lb.NewLeastRequest(hs, lb.Options{Rand: lbtest.SeededRand(5), ChoiceCount: 5})
	var dones []func(lb.DoneInfo)
	for _, a := range []string{"a", "b", "c"} {
		dones = append(dones, hold(t, p, a))
	}
	for range 50 {
		if got := pickAddr(t, p, &lb.Request{}); got != "d" {
			t.Fatalf("picked %s; want idle d", got)
		}
	}
	for _, d := range dones {
		d(lb.DoneInfo{})
	}
	// ChoiceCount 3 < 10 hosts: rejection sampling of distinct hosts.
	hs = lbtest.Hosts(addrs(10)...)
	p = lb.NewLeastRequest(hs, lb.Options{Rand: lbtest.SeededRand(6), ChoiceCount: 3})
	done := hold(t, p, hs[0].Addr())
	defer done(lb.DoneInfo{})
	for range 200 {
		if got := pickAddr(t, p, &lb.Request{}); got == hs[0].Addr() {
			t.Fatal("picked the busy host")
		}
	}
}

// TestPeakEWMAAvoidsSlowHost: host a's samples are 50 ms above b's and c's.
func TestPeakEWMAAvoidsSlowHost(t *testing.T) {
	clock := lbtest.NewClock(time.Unix(1700000000, 0))
	hs := lbtest.Hosts("a", "b", "c")
	p := lb.NewPeakEWMA(hs, lb.Options{Rand: lbtest.SeededRand(7), Now: clock.Now})
	lat := map[string]time.Duration{"a": 51 * time.Millisecond, "b": time.Millisecond, "c": time.Millisecond}
	c := map[string]int{}
	// As behind a proxy, each request is still finishing (in flight) when the next is
	// picked, so the previous host's cost is doubled at every pick; a 50 ms host must lose
	// anyway once the others have answered fast.
	var prev func()
	for i := range 330 {
		h, done, err := p.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			prev()
		}
		clock.Advance(time.Millisecond)
		prev = func() { done(lb.DoneInfo{Latency: lat[h.Addr()]}) }
		if i >= 30 {
			c[h.Addr()]++
		}
	}
	prev()
	// Round robin would give a 100 of these 300.
	if c["a"] > 3 {
		t.Fatalf("peak EWMA sent %d of 300 picks to the slow host (%v); want ≤ 3", c["a"], c)
	}
}

func TestPeakEWMAEstimate(t *testing.T) {
	clock := lbtest.NewClock(time.Unix(1700000000, 0))
	hs := lbtest.Hosts("a")
	st := hs[0].Stats()
	p := lb.NewPeakEWMA(hs, lb.Options{Now: clock.Now, Decay: 10 * time.Second, DefaultRTT: 30 * time.Millisecond})
	if v, sampled := st.PeakEWMA(); sampled || v != 30*time.Millisecond {
		t.Fatalf("initial estimate %v, sampled %v; want the 30ms prior", v, sampled)
	}
	observe := func(d time.Duration) time.Duration {
		_, done, err := p.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		done(lb.DoneInfo{Latency: d})
		v, _ := st.PeakEWMA()
		return v
	}
	if v := observe(time.Millisecond); v != time.Millisecond {
		t.Fatalf("after a first sample of 1ms: %v; want the prior replaced", v)
	}
	clock.Advance(time.Second)
	if v := observe(100 * time.Millisecond); v != 100*time.Millisecond {
		t.Fatalf("after a 100ms peak: %v; want 100ms at once", v)
	}
	clock.Advance(10 * time.Second) // one time constant: weight e^-1 on the old value
	want := 100*0.36787944 + 10*(1-0.36787944)
	if v := observe(10 * time.Millisecond); absf(v.Seconds()*1000-want) > 0.01 {
		t.Fatalf("after 10s and a 10ms sample: %v; want %.3fms", v, want)
	}
	if v := observe(0); v.Seconds()*1000-want > 0.01 {
		t.Fatalf("a zero latency is no sample, yet the estimate changed to %v", v)
	}
}

func absf(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestOriginalDst(t *testing.T) {
	hs := lbtest.Hosts("10.0.0.1:80", "10.0.0.2:80", "example.com:80", "[2001:db8::1]:443")
	p := lb.NewOriginalDst(hs, lb.Options{})
	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
		want string // "" means ErrNoHost
	}{
		{"exact", netip.MustParseAddrPort("10.0.0.2:80"), "10.0.0.2:80"},
		{"v4-mapped v6", netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), "10.0.0.1:80"},
		{"v6", netip.MustParseAddrPort("[2001:db8::1]:443"), "[2001:db8::1]:443"},
		{"other port", netip.MustParseAddrPort("10.0.0.2:81"), ""},
		{"unknown", netip.MustParseAddrPort("10.9.9.9:80"), ""},
		{"unset", netip.AddrPort{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, done, err := p.Pick(t.Context(), &lb.Request{OriginalDst: tc.dst})
			if tc.want == "" {
				if !errors.Is(err, lb.ErrNoHost) {
					t.Fatalf("Pick = %v, %v; want ErrNoHost", h, err)
				}
				return
			}
			if err != nil || h.Addr() != tc.want {
				t.Fatalf("Pick = %v, %v; want %s", h, err, tc.want)
			}
			done(lb.DoneInfo{})
		})
	}
}

// TestDoneTracksActive: for every balancer, a pick counts in flight until its done, and
// concurrent picks (run under -race) leave every count at zero.
func TestDoneTracksActive(t *testing.T) {
	for _, n := range lb.Builtins() {
		t.Run(n.Name, func(t *testing.T) {
			t.Parallel()
			hs := lbtest.Hosts(addrs(5)...)
			p := n.Factory(hs, lb.Options{})
			r := &lb.Request{HashKey: 42, HasHash: true, OriginalDst: netip.MustParseAddrPort(hs[2].Addr())}
			h, done, err := p.Pick(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			if a := h.Stats().Active(); a != 1 {
				t.Fatalf("active after pick = %d; want 1", a)
			}
			done(lb.DoneInfo{Latency: time.Millisecond})
			if a := h.Stats().Active(); a != 0 {
				t.Fatalf("active after done = %d; want 0", a)
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					r := *r
					for i := range 500 {
						r.HashKey = uint64(g*1000 + i)
						_, done, err := p.Pick(t.Context(), &r)
						if err != nil {
							t.Error(err)
							return
						}
						done(lb.DoneInfo{Latency: time.Duration(i) * time.Microsecond})
					}
				})
			}
			wg.Wait()
			for _, h := range hs {
				if a := h.Stats().Active(); a != 0 {
					t.Fatalf("%s active = %d after all done", h.Addr(), a)
				}
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    lb.Options
		ok   bool
	}{
		{"zero", lb.Options{}, true},
		{"prime table", lb.Options{TableSize: 65537, ChoiceCount: 3}, true},
		{"non-prime table", lb.Options{TableSize: 65536}, false},
		{"choice count 1", lb.Options{ChoiceCount: 1}, false},
		{"choice count too big", lb.Options{ChoiceCount: lb.MaxChoiceCount + 1}, false},
		{"negative bias", lb.Options{ActiveRequestBias: -1}, false},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v; want ok=%v", tc.name, err, tc.ok)
		}
	}
}
