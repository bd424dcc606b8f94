package cluster_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// fakeResolver answers from a table that tests change; a name set to block waits for ctx
// and reports the cancellation on cancelled.
type fakeResolver struct {
	mu        sync.Mutex
	answers   map[string][]netip.Addr
	errs      map[string]error
	block     map[string]bool
	calls     map[string]int
	networks  map[string]string
	blocked   chan string // a blocking lookup started
	cancelled chan string // a blocking lookup saw its ctx end
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{
		answers: map[string][]netip.Addr{}, errs: map[string]error{}, block: map[string]bool{},
		calls: map[string]int{}, networks: map[string]string{},
		blocked: make(chan string, 16), cancelled: make(chan string, 16),
	}
}

func (r *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.calls[host]++
	r.networks[host] = network
	ans, err, block := slices.Clone(r.answers[host]), r.errs[host], r.block[host]
	r.mu.Unlock()
	if block {
		r.blocked <- host
		<-ctx.Done()
		r.cancelled <- host
		return nil, ctx.Err()
	}
	return ans, err
}

func (r *fakeResolver) set(host string, err error, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[host] = err
	r.answers[host] = nil
	for _, a := range addrs {
		r.answers[host] = append(r.answers[host], netip.MustParseAddr(a))
	}
	if addrs == nil && err == nil {
		r.answers[host] = []netip.Addr{} // successful, empty
	}
}

func (r *fakeResolver) setBlock(host string, b bool) {
	r.mu.Lock()
	r.block[host] = b
	r.mu.Unlock()
}

func (r *fakeResolver) callCount(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

func dnsCluster(name, family string, rate time.Duration, addrs ...string) config.Cluster {
	return config.Cluster{Name: name, Type: config.ClusterStrictDNS, Hosts: hosts(addrs...),
		DNSRefreshRate: dur(rate), DNSLookupFamily: family, PickTimeout: dur(0)}
}

// runManager starts m.Run and stops it (waiting for it) at cleanup.
func runManager(t *testing.T, m *cluster.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestStrictDNS(t *testing.T) {
	res := newFakeResolver()
	res.set("svc.test", nil, "10.0.0.2", "10.0.0.1", "::ffff:10.0.0.1") // mapped duplicate collapses
	res.set("other.test", nil, "10.0.1.1")
	m, mt := newManager(t, cluster.Options{Resolver: res})
	cfg := dnsCluster("dns", "V4_ONLY", 5*time.Millisecond, "svc.test:8080", "other.test:9090", "10.9.9.9:7070")
	cfg.Hosts[0].Weight = 3
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "dns")
	// Before Run: only the literal address; names have no hosts yet.
	if got := hostAddrs(c); !slices.Equal(got, []string{"10.9.9.9:7070"}) {
		t.Fatalf("hosts before the first resolution = %v", got)
	}
	runManager(t, m)
	want := []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.1.1:9090", "10.9.9.9:7070"}
	testutil.Eventually(t, 5*time.Second, "initial hosts", func() bool { return slices.Equal(hostAddrs(c), want) })
	for _, h := range c.Hosts()[:2] {
		if h.Weight() != 3 || h.Hostname() != "svc.test" {
			t.Fatalf("%s: weight %d hostname %q; want the entry's weight 3 and name", h.Addr(), h.Weight(), h.Hostname())
		}
	}
	res.mu.Lock()
	network := res.networks["svc.test"]
	res.mu.Unlock()
	if network != "ip4" {
		t.Fatalf("V4_ONLY looked up %q; want ip4", network)
	}
	statsBefore := c.Hosts()[0].Stats()

	// Failure (e.g. NXDOMAIN or a timeout): the last good hosts stay, failures are counted.
	res.set("svc.test", errors.New("no such host"))
	n := res.callCount("svc.test")
	testutil.Eventually(t, 5*time.Second, "failed lookups", func() bool {
		return value(mt.DNSResolveFailures.WithLabelValues("dns")) >= 2 && res.callCount("svc.test") >= n+2
	})
	if got := hostAddrs(c); !slices.Equal(got, want) {
		t.Fatalf("hosts after failed lookups = %v; want the last good %v", got, want)
	}
	if c.Hosts()[0].Stats() != statsBefore {
		t.Fatal("host state was not kept")
	}

	// A successful empty answer empties that entry only.
	res.set("svc.test", nil)
	testutil.Eventually(t, 5*time.Second, "empty answer applied", func() bool {
		return slices.Equal(hostAddrs(c), []string{"10.0.1.1:9090", "10.9.9.9:7070"})
	})

	// Recovery.
	res.set("svc.test", nil, "10.0.0.3")
	testutil.Eventually(t, 5*time.Second, "new answer", func() bool {
		return slices.Equal(hostAddrs(c), []string{"10.0.0.3:8080", "10.0.1.1:9090", "10.9.9.9:7070"})
	})
	if v := value(mt.UpstreamHosts.WithLabelValues("dns")); v != 3 {
		t.Fatalf("upstream_hosts = %v; want 3", v)
	}
}

func TestStrictDNSPickWaitsForFirstResolution(t *testing.T) {
	res := newFakeResolver()
	res.set("late.test", nil, "10.0.0.5")
	m, _ := newManager(t, cluster.Options{Resolver: res})
	cfg := dnsCluster("late", "", time.Hour, "late.test:80")
	cfg.PickTimeout = dur(10 * time.Second)
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "late")
	errc := make(chan error, 1)
	go func() {
		h, done, err := c.Pick(t.Context(), &lb.Request{})
		if err == nil {
			done(lb.DoneInfo{})
			if h.Addr() != "10.0.0.5:80" {
				err = errors.New("picked " + h.Addr())
			}
		}
		errc <- err
	}()
	runManager(t, m) // the first resolution wakes the waiting pick
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pick did not wake on the first resolution")
	}
}

// TestStrictDNSRefresherLifecycle: a refresher stops when its cluster is removed or its
// DNS settings change, and clusters added after Run get one.
func TestStrictDNSRefresherLifecycle(t *testing.T) {
	res := newFakeResolver()
	m, _ := newManager(t, cluster.Options{Resolver: res})
	runManager(t, m)

	// Added after Run started: gets a refresher.
	res.set("a.test", nil, "10.0.0.1")
	if err := m.AddOrUpdate(dnsCluster("a", "", 5*time.Millisecond, "a.test:80")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "late cluster resolved", func() bool { return slices.Equal(hostAddrs(get(t, m, "a")), []string{"10.0.0.1:80"}) })

	// Replaced (refresh rate changed): the old refresher's lookup is cancelled; the new
	// one runs.
	res.setBlock("a.test", true)
	<-res.blocked
	if err := m.AddOrUpdate(dnsCluster("a", "", 7*time.Millisecond, "a.test:80")); err != nil {
		t.Fatal(err)
	}
	waitCancelled(t, res, "a.test")
	<-res.blocked // the new refresher's first lookup
	// An update that keeps the DNS settings (weight only) keeps the refresher.
	cfg := dnsCluster("a", "", 7*time.Millisecond, "a.test:80")
	cfg.Hosts[0].Weight = 2
	if err := m.AddOrUpdate(cfg); err != nil {
		t.Fatal(err)
	}
	if h := get(t, m, "a").Hosts(); len(h) != 1 || h[0].Weight() != 2 {
		t.Fatalf("hosts after a weight change = %v", h)
	}
	select {
	case <-res.cancelled:
		t.Fatal("a weight change restarted the refresher")
	default:
	}

	// Removed: the refresher is cancelled.
	if err := m.Remove("a"); err != nil {
		t.Fatal(err)
	}
	waitCancelled(t, res, "a.test")

	// Apply that drops a STRICT_DNS cluster also stops its refresher.
	res.setBlock("b.test", true)
	if err := m.Apply([]config.Cluster{dnsCluster("b", "", time.Millisecond, "b.test:80")}); err != nil {
		t.Fatal(err)
	}
	<-res.blocked
	if err := m.Apply(nil); err != nil {
		t.Fatal(err)
	}
	waitCancelled(t, res, "b.test")
	// goleak (TestMain) and Run's join at cleanup check that nothing is left running.
}

func waitCancelled(t *testing.T, res *fakeResolver, host string) {
	t.Helper()
	select {
	case h := <-res.cancelled:
		if h != host {
			t.Fatalf("cancelled lookup of %s; want %s", h, host)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("lookup of %s was not cancelled", host)
	}
}
