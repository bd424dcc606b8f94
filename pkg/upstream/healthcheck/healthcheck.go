// Package healthcheck runs active health checks, MOSN's cluster health_check: a TCP
// connect (optionally sending bytes and expecting a reply, as Envoy's tcp_health_check) or
// an HTTP/1.1 request over a fresh connection, repeated every interval plus a random
// jitter, with healthy and unhealthy thresholds.
//
// It knows nothing of clusters. A Checker is one cluster's immutable check settings; the
// cluster package runs Checker.Run once per host, on a goroutine it owns, and applies the
// transitions Run reports.
package healthcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

const (
	// maxReply caps what a check reads: the HTTP status line and headers, the drained
	// body, or a TCP reply searched for the expected bytes.
	maxReply = 64 << 10
	// userAgent identifies checks in upstream logs.
	userAgent = "mosnlite-healthcheck"
)

// Options are a Checker's dependencies; both may be nil.
type Options struct {
	// Dial opens the check's connection; nil: a net.Dialer. It must honour ctx.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Rand draws the jitter; it must be safe for concurrent use. nil: math/rand/v2.
	Rand func() uint64
}

// Checker holds one cluster's validated health_check settings. It is immutable and safe for
// concurrent use by the Run of every host.
type Checker struct {
	protocol  string
	timeout   time.Duration
	interval  time.Duration
	jitter    time.Duration
	delay     time.Duration
	healthy   uint32
	unhealthy uint32
	send      []byte // tcp
	receive   []byte // tcp
	http      *httpCheck
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	rand      func() uint64
}

type httpCheck struct {
	port   string // "" is the host's own
	target string // request target: path and query
	method string
	host   string // Host header; "" is the dialled address
	codes  []config.StatusRange
}

// New validates cfg and applies its defaults. Errors name the field below health_check.
func New(cfg *config.HealthCheck, o Options) (*Checker, error) {
	if cfg == nil {
		return nil, errors.New("health_check: nil config")
	}
	if errs, _ := cfg.Check(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = "health_check." + e.Error()
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	if o.Rand == nil {
		o.Rand = rand.Uint64
	}
	proto, _ := config.HealthCheckProtocol(cfg.Protocol)
	c := &Checker{
		protocol:  proto,
		timeout:   cfg.Timeout.Or(config.DefaultHealthCheckTimeout),
		interval:  cfg.Interval.Or(config.DefaultHealthCheckInterval),
		delay:     cfg.InitialDelay.Or(0),
		healthy:   cfg.HealthyThreshold,
		unhealthy: cfg.UnhealthyThreshold,
		dial:      o.Dial,
		rand:      o.Rand,
	}
	c.jitter = cfg.IntervalJitter.Or(c.interval / 10)
	if c.healthy == 0 {
		c.healthy = config.DefaultHealthyThreshold
	}
	if c.unhealthy == 0 {
		c.unhealthy = config.DefaultUnhealthyThreshold
	}
	var cc config.HealthCheckConfig
	if cfg.CheckConfig != nil {
		cc = *cfg.CheckConfig
	}
	switch proto {
	case config.HealthCheckTCP:
		if cc.TCP != nil {
			c.send, _ = hex.DecodeString(cc.TCP.Send) // Check has vetted both
			c.receive, _ = hex.DecodeString(cc.TCP.Receive)
		}
	case config.HealthCheckHTTP:
		h := &httpCheck{target: config.DefaultHealthCheckPath, method: http.MethodGet,
			codes: []config.StatusRange{{Start: config.DefaultHealthCheckStatus, End: config.DefaultHealthCheckStatus}}}
		if hc := cc.HTTP; hc != nil {
			if hc.Port != 0 {
				h.port = strconv.FormatUint(uint64(hc.Port), 10)
			}
			if hc.Path != "" {
				h.target = hc.Path
			}
			if hc.Method != "" {
				h.method = strings.ToUpper(hc.Method)
			}
			h.host = hc.Domain
			if len(hc.Codes) > 0 {
				h.codes = hc.Codes
			}
			c.timeout = hc.Timeout.Or(c.timeout)
		}
		c.http = h
	}
	return c, nil
}

// Protocol returns "tcp" or "http".
func (c *Checker) Protocol() string { return c.protocol }

// Interval returns the base interval between checks of a host.
func (c *Checker) Interval() time.Duration { return c.interval }

// Status is a host's state as a Run sees it.
type Status struct {
	Up bool
	// Confirmed: the host has passed a check. Until it has, one failure takes it down
	// (a host that is dead when it appears should not wait for unhealthy_threshold
	// rounds); after that, unhealthy_threshold failures in a row do.
	Confirmed bool
}

// Report is the outcome of one check.
type Report struct {
	Err     error  // nil: the check passed
	Status  Status // after this check
	Changed bool   // Status.Up changed
}

// Run checks addr until ctx ends: the first check after the initial delay plus jitter, then
// each interval plus jitter after the previous one finished. It calls report after every
// check (from Run's goroutine), starting from the state st. A check cut short by ctx
// reports nothing. Run holds one timer, stopped when it returns.
func (c *Checker) Run(ctx context.Context, addr string, st Status, report func(Report)) {
	t := time.NewTimer(c.delay + c.jitterDelay())
	defer t.Stop()
	var successes, failures uint32
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.Probe(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		r := Report{Err: err}
		if err == nil {
			failures = 0
			successes++
			st.Confirmed = true
			if !st.Up && successes >= c.healthy {
				st.Up, r.Changed = true, true
			}
		} else {
			successes = 0
			failures++
			if st.Up && (failures >= c.unhealthy || !st.Confirmed) {
				st.Up, r.Changed = false, true
			}
		}
		r.Status = st
		report(r)
		t.Reset(c.interval + c.jitterDelay())
	}
}

func (c *Checker) jitterDelay() time.Duration {
	if c.jitter <= 0 {
		return 0
	}
	return time.Duration(c.rand() % uint64(c.jitter))
}

// Probe runs one check of addr ("ip:port") within the timeout: nil means healthy.
func (c *Checker) Probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var err error
	if c.http != nil {
		err = c.probeHTTP(ctx, addr)
	} else {
		err = c.probeTCP(ctx, addr)
	}
	// The conn deadline and ctx's timer fire at the same instant, in either order.
	if err != nil && (errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
		err = fmt.Errorf("%w (timeout %v)", err, c.timeout)
	}
	return err
}

// connect dials addr and arranges for the connection to close when ctx ends, so that a
// blocked read or write returns at once on timeout or cancellation. release must be called.
func (c *Checker) connect(ctx context.Context, addr string) (conn net.Conn, release func(), err error) {
	conn, err = c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s check %s: %w", c.protocol, addr, err)
	}
	if conn == nil {
		return nil, nil, fmt.Errorf("%s check %s: dialer returned no connection", c.protocol, addr)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	return conn, func() { stop(); conn.Close() }, nil
}

func (c *Checker) probeTCP(ctx context.Context, addr string) error {
	conn, release, err := c.connect(ctx, addr)
	if err != nil {
		return err
	}
	defer release()
	if len(c.send) > 0 {
		if _, err := conn.Write(c.send); err != nil {
			return fmt.Errorf("tcp check %s: send: %w", addr, err)
		}
	}
	if len(c.receive) == 0 {
		return nil
	}
	var got []byte
	chunk := make([]byte, 2048)
	for {
		n, err := conn.Read(chunk)
		got = append(got, chunk[:n]...)
		switch {
		case bytes.Contains(got, c.receive):
			return nil
		case len(got) >= maxReply:
			return fmt.Errorf("tcp check %s: expected reply not in the first %d bytes", addr, len(got))
		case err != nil:
			return fmt.Errorf("tcp check %s: reply (%d bytes) lacks the expected bytes: %w", addr, len(got), err)
		}
	}
}

func (c *Checker) probeHTTP(ctx context.Context, addr string) error {
	h := c.http
	target := addr
	if h.port != "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("http check %s: %w", addr, err)
		}
		target = net.JoinHostPort(host, h.port)
	}
	req, err := http.NewRequestWithContext(ctx, h.method, "http://"+target+h.target, nil)
	if err != nil {
		return fmt.Errorf("http check %s: %w", target, err)
	}
	if h.host != "" {
		req.Host = h.host
	}
	req.Close = true
	req.Header.Set("User-Agent", userAgent)
	conn, release, err := c.connect(ctx, target)
	if err != nil {
		return err
	}
	defer release()
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("http check %s: write request: %w", target, err)
	}
	// The limit bounds the status line and headers too: ReadResponse alone would buffer
	// an endless header section.
	br := bufio.NewReaderSize(io.LimitReader(conn, maxReply), 4096)
	var resp *http.Response
	for i := 0; ; i++ {
		if resp, err = http.ReadResponse(br, req); err != nil {
			return fmt.Errorf("http check %s: read response: %w", target, err)
		}
		// Informational answers (103 Early Hints, 100 Continue) come before the final
		// one, which decides; Go's Transport also reads past up to 5 of them.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols || i == 4 {
			break
		}
	}
	io.Copy(io.Discard, resp.Body) // bounded by the limit reader; errors do not matter
	resp.Body.Close()
	for _, r := range h.codes {
		if resp.StatusCode >= r.Start && resp.StatusCode <= r.End {
			return nil
		}
	}
	return fmt.Errorf("http check %s %s: status %d", target, h.target, resp.StatusCode)
}
