package healthcheck_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/healthcheck"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dur(d time.Duration) *config.Duration { v := config.Duration(d); return &v }

func mustNew(t *testing.T, cfg *config.HealthCheck, o healthcheck.Options) *healthcheck.Checker {
	t.Helper()
	c, err := healthcheck.New(cfg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestNew(t *testing.T) {
	c := mustNew(t, &config.HealthCheck{}, healthcheck.Options{})
	if c.Protocol() != "tcp" || c.Interval() != config.DefaultHealthCheckInterval {
		t.Fatalf("defaults: protocol %q interval %v", c.Protocol(), c.Interval())
	}
	for _, p := range []string{"Http1", "HTTP", "http"} {
		if c := mustNew(t, &config.HealthCheck{Protocol: p}, healthcheck.Options{}); c.Protocol() != "http" {
			t.Errorf("protocol %q → %q; want http", p, c.Protocol())
		}
	}
	for _, tc := range []struct {
		name string
		cfg  config.HealthCheck
		want string
	}{
		{"unknown protocol", config.HealthCheck{Protocol: "bolt"}, `health_check.protocol: unknown "bolt"`},
		{"zero timeout", config.HealthCheck{Timeout: dur(0)}, "health_check.timeout: must be positive"},
		{"zero interval", config.HealthCheck{Interval: dur(0)}, "health_check.interval: must be positive"},
		{"bad path", config.HealthCheck{Protocol: "http", CheckConfig: &config.HealthCheckConfig{HTTP: &config.HTTPCheckConfig{Path: "health"}}},
			"health_check.check_config.http_check_config.path"},
		{"https", config.HealthCheck{Protocol: "http", CheckConfig: &config.HealthCheckConfig{HTTP: &config.HTTPCheckConfig{Scheme: "https"}}},
			"health_check.check_config.http_check_config.scheme: https health checks are not supported"},
		{"bad code range", config.HealthCheck{Protocol: "http", CheckConfig: &config.HealthCheckConfig{HTTP: &config.HTTPCheckConfig{Codes: []config.StatusRange{{Start: 200, End: 100}}}}},
			"health_check.check_config.http_check_config.codes[0].end"},
		{"bad hex", config.HealthCheck{CheckConfig: &config.HealthCheckConfig{TCP: &config.TCPCheckConfig{Send: "zz"}}},
			"health_check.check_config.tcp_check_config.send"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := healthcheck.New(&tc.cfg, healthcheck.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// server runs handle on every connection of a loopback listener until the test ends.
func server(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// deadAddr is a loopback port that refuses connects; it stays reserved until the test ends.
func deadAddr(t *testing.T) string { return testutil.RefusedAddr(t) }

func TestProbeTCP(t *testing.T) {
	pingPong := server(t, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		switch {
		case err != nil:
		case line == "PING\n":
			c.Write([]byte("banner...+PONG\r\n"))
		default:
			c.Write([]byte("-ERR\r\n"))
		}
	})
	silent := server(t, func(c net.Conn) { c.Read(make([]byte, 1)) }) // returns when the checker closes
	hexOf := func(s string) string {
		const digits = "0123456789abcdef"
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			b.WriteByte(digits[s[i]>>4])
			b.WriteByte(digits[s[i]&15])
		}
		return b.String()
	}
	for _, tc := range []struct {
		name    string
		addr    string
		tcp     *config.TCPCheckConfig
		wantErr string
	}{
		{"connect", pingPong, nil, ""},
		{"refused", deadAddr(t), nil, "connection refused"},
		{"send and receive", pingPong, &config.TCPCheckConfig{Send: hexOf("PING\n"), Receive: hexOf("+PONG")}, ""},
		{"wrong reply", pingPong, &config.TCPCheckConfig{Send: hexOf("HELLO\n"), Receive: hexOf("+PONG")}, "lacks the expected bytes"},
		{"no reply", silent, &config.TCPCheckConfig{Receive: hexOf("+PONG")}, "timeout 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, &config.HealthCheck{Timeout: dur(100 * time.Millisecond), CheckConfig: &config.HealthCheckConfig{TCP: tc.tcp}}, healthcheck.Options{})
			start := time.Now()
			err := c.Probe(t.Context(), tc.addr)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Probe = %v; want error containing %q", err, tc.wantErr)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Fatalf("Probe took %v; the timeout is 100ms", el)
			}
		})
	}
}

func TestProbeHTTP(t *testing.T) {
	var status atomic.Int64
	status.Store(200)
	type seen struct{ method, uri, host, ua, conn string }
	got := make(chan seen, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.RequestURI, r.Host, r.UserAgent(), r.Header.Get("Connection")}
		w.WriteHeader(int(status.Load()))
		w.Write([]byte("body"))
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	hc := func(h *config.HTTPCheckConfig) *config.HealthCheck {
		return &config.HealthCheck{Protocol: "Http1", Timeout: dur(time.Second), CheckConfig: &config.HealthCheckConfig{HTTP: h}}
	}
	c := mustNew(t, hc(nil), healthcheck.Options{})
	if err := c.Probe(t.Context(), addr); err != nil {
		t.Fatalf("default check of a 200: %v", err)
	}
	if s := <-got; s.method != "GET" || s.uri != "/" || s.host != addr || s.ua != "mosnlite-healthcheck" {
		t.Fatalf("default request = %+v", s)
	}
	status.Store(500)
	if err := c.Probe(t.Context(), addr); err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Fatalf("check of a 500 = %v; want status 500", err)
	}
	<-got

	// MOSN's form: another port (the host's is dead), path with query, method, domain, codes.
	p, _ := strconv.Atoi(port)
	c = mustNew(t, hc(&config.HTTPCheckConfig{Port: uint32(p), Path: "/health?deep=1", Method: "head", Domain: "svc.example",
		Codes: []config.StatusRange{{Start: 200, End: 299}, {Start: 418, End: 418}}}), healthcheck.Options{})
	for _, code := range []int64{204, 418} {
		status.Store(code)
		if err := c.Probe(t.Context(), "127.0.0.1:1"); err != nil {
			t.Fatalf("check of a %d with codes 200-299,418: %v", code, err)
		}
		if s := <-got; s.method != "HEAD" || s.uri != "/health?deep=1" || s.host != "svc.example" {
			t.Fatalf("request = %+v", s)
		}
	}
	status.Store(302)
	if err := c.Probe(t.Context(), "127.0.0.1:1"); err == nil {
		t.Fatal("302 passed codes 200-299,418")
	}
	<-got
}

func TestProbeHTTPBounded(t *testing.T) {
	// Endless headers: the check fails once it has read its limit, it does not buffer on.
	endless := server(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("HTTP/1.1 200 OK\r\n"))
		line := []byte("X-Filler: " + strings.Repeat("a", 1000) + "\r\n")
		for {
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	hang := server(t, func(c net.Conn) { c.Read(make([]byte, 4096)); c.Read(make([]byte, 1)) })
	c := mustNew(t, &config.HealthCheck{Protocol: "http", Timeout: dur(200 * time.Millisecond)}, healthcheck.Options{})
	for name, addr := range map[string]string{"endless headers": endless, "no answer": hang} {
		start := time.Now()
		if err := c.Probe(t.Context(), addr); err == nil {
			t.Errorf("%s: check passed", name)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s: check took %v", name, el)
		}
	}
}

// scriptDial fails or succeeds as its script says, one entry per dial, then succeeds (or
// fails, with failAfter) once the script is used up. Success is one end of a pipe.
type scriptDial struct {
	mu        sync.Mutex
	script    []bool // true: fail
	failAfter bool
}

func (d *scriptDial) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	fail := d.failAfter
	if len(d.script) > 0 {
		fail, d.script = d.script[0], d.script[1:]
	}
	d.mu.Unlock()
	if fail {
		return nil, errors.New("refused")
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func TestRunThresholds(t *testing.T) {
	run := func(d *scriptDial, st healthcheck.Status) (chan healthcheck.Report, func()) {
		c := mustNew(t, &config.HealthCheck{Interval: dur(time.Millisecond), IntervalJitter: dur(0), HealthyThreshold: 2, UnhealthyThreshold: 3},
			healthcheck.Options{Dial: d.Dial})
		reports := make(chan healthcheck.Report)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() {
			c.Run(ctx, "10.0.0.1:80", st, func(r healthcheck.Report) {
				select {
				case reports <- r:
				case <-ctx.Done():
				}
			})
		})
		return reports, func() { cancel(); wg.Wait() }
	}
	next := func(reports chan healthcheck.Report) healthcheck.Report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no report")
			return healthcheck.Report{}
		}
	}

	// A confirmed host goes down after 3 failures in a row and up after 2 successes.
	reports, stop := run(&scriptDial{script: []bool{true, true, false, true, true, true, false, false}},
		healthcheck.Status{Up: true, Confirmed: true})
	for i, want := range []struct{ ok, up, changed bool }{
		{false, true, false}, {false, true, false}, {true, true, false}, // a success resets the count
		{false, true, false}, {false, true, false}, {false, false, true},
		{true, false, false}, {true, true, true},
	} {
		if r := next(reports); (r.Err == nil) != want.ok || r.Status.Up != want.up || r.Changed != want.changed {
			t.Fatalf("check %d: %+v; want ok %v up %v changed %v", i, r, want.ok, want.up, want.changed)
		}
	}
	stop()

	// A host that has not passed a check yet goes down on its first failure.
	reports, stop = run(&scriptDial{failAfter: true}, healthcheck.Status{Up: true})
	if r := next(reports); !r.Changed || r.Status.Up || r.Status.Confirmed {
		t.Fatalf("first failure of an unconfirmed host: %+v", r)
	}
	stop()

	// Run returns promptly when its ctx ends, even between checks of a long interval.
	slow := mustNew(t, &config.HealthCheck{Interval: dur(time.Hour), InitialDelay: dur(time.Hour)}, healthcheck.Options{Dial: (&scriptDial{}).Dial})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		slow.Run(ctx, "10.0.0.1:80", healthcheck.Status{Up: true}, func(healthcheck.Report) {})
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
