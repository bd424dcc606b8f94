// Command loadgen is mosnlite's loopback load harness. `make bench` runs `loadgen bench`,
// which measures in one run, for each target (direct, nginx's stream proxy, mosnlite's
// tcp_proxy):
//
//   - bulk TCP throughput: one stream (by default) written with 1 MiB writes to an upstream
//     that discards it, in MiB/s received by the upstream;
//   - new-connection rate: connect, send one 64-byte request, read the 64-byte reply, close,
//     from 32 workers, in completed connections/s;
//
// and the proxy's CPU time (utime+stime from /proc/PID/stat; nginx: master + worker) per MiB
// and per connection over the measured window. The proxy runs alone on CPU 0; this process
// (load client and upstream) re-executes itself on CPU 1. Each window is bounded in time
// (-duration) and volume (-bulk-max, -conn-max).
//
//	loadgen bench [-targets direct,nginx,mosnlite] [-mosnlite bin/mosnlite] [-doc docs/benchmarks.md]
//	loadgen upstream -listen 127.0.0.1:9000         the harness's upstream alone (manual runs)
//	loadgen client -addr HOST:PORT -mode bulk|conn [-pids P,P]   one measurement against any proxy
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: loadgen bench|upstream|client [flags] (-h for each)")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr)
	case "upstream":
		return cmdUpstream(ctx, args[1:], stderr)
	case "client":
		return cmdClient(ctx, args[1:], stdout, stderr)
	}
	return errUsage
}

// loadFlags are the load shape, shared by bench and client.
type loadFlags struct {
	warmup, duration time.Duration
	bulkConns        int
	bulkBuf          int
	bulkMax          int64
	connWorkers      int
	connMax          int64
	msgSize          int
}

func (l *loadFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&l.warmup, "warmup", 500*time.Millisecond, "load before each measured window")
	fs.DurationVar(&l.duration, "duration", 5*time.Second, "length of each measured window")
	fs.IntVar(&l.bulkConns, "bulk-conns", 4, "bulk: parallel streams")
	fs.IntVar(&l.bulkBuf, "bulk-buf", 1<<20, "bulk: bytes per client write")
	fs.Int64Var(&l.bulkMax, "bulk-max", 64<<30, "bulk: end the window early after this many bytes")
	fs.IntVar(&l.connWorkers, "conn-workers", 32, "conns: concurrent connecting workers")
	fs.Int64Var(&l.connMax, "conn-max", 1_000_000, "conns: end the window early after this many connections")
	fs.IntVar(&l.msgSize, "msg-size", 64, "conns: request and reply size in bytes")
}

func (l *loadFlags) check() error {
	if l.duration <= 0 || l.warmup < 0 || l.bulkConns < 1 || l.bulkBuf < 1 || l.connWorkers < 1 || l.msgSize < 1 {
		return fmt.Errorf("%w: durations and sizes must be positive", errUsage)
	}
	return nil
}

func (l *loadFlags) opts(cpu func() (time.Duration, error), maxCount int64) measureOpts {
	return measureOpts{Warmup: l.warmup, Duration: l.duration, MaxCount: float64(maxCount), CPU: cpu}
}

type benchFlags struct {
	load         loadFlags
	targets      string
	mosnlite     string
	nginx        string
	streamModule string
	rounds       int
	pin          bool
	proxyCPU     string
	loadCPU      string
	doc          string
	command      string
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	f.load.register(fs)
	fs.StringVar(&f.targets, "targets", "direct,nginx,mosnlite", "comma list of direct, nginx, mosnlite")
	fs.StringVar(&f.mosnlite, "mosnlite", "bin/mosnlite", "mosnlite binary")
	fs.StringVar(&f.nginx, "nginx", "nginx", "nginx binary (PATH is searched, then /usr/sbin)")
	fs.StringVar(&f.streamModule, "nginx-stream-module", "", "ngx_stream_module.so to load (default: found when nginx has it as a dynamic module)")
	fs.IntVar(&f.rounds, "rounds", 1, "repeat every measurement; the report shows medians")
	fs.BoolVar(&f.pin, "pin", true, "pin the proxy to -proxy-cpu and this process to -load-cpu (needs 2 CPUs)")
	fs.StringVar(&f.proxyCPU, "proxy-cpu", "0", "CPU for the proxy process")
	fs.StringVar(&f.loadCPU, "load-cpu", "1", "CPU for the load client and upstream")
	fs.StringVar(&f.doc, "doc", "", "markdown file whose loadgen section is rewritten with the results (e.g. docs/benchmarks.md)")
	fs.StringVar(&f.command, "command", "", "command line recorded in the report (default: this one)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.load.check(); err != nil {
		return err
	}
	if f.rounds < 1 {
		return fmt.Errorf("%w: -rounds must be at least 1", errUsage)
	}
	targets := strings.Split(f.targets, ",")
	for _, t := range targets {
		if t != "direct" && t != "nginx" && t != "nginx-halfclose" && t != "mosnlite" {
			return fmt.Errorf("%w: -targets: unknown %q (known: direct, nginx, nginx-halfclose, mosnlite)", errUsage, t)
		}
	}
	if f.command == "" {
		f.command = "loadgen bench " + strings.Join(args, " ")
	}
	mach := benchproc.ReadMachine()
	proxyCPU := ""
	if f.pin {
		if mach.CPUs < 2 {
			fmt.Fprintf(stderr, "loadgen: %d CPU(s): running without pinning\n", mach.CPUs)
			f.pin = false
		} else if err := benchproc.PinSelf(f.loadCPU, "LOADGEN_PINNED"); err != nil {
			return err
		} else {
			proxyCPU = f.proxyCPU
		}
	}
	if f.nginx == "nginx" {
		if _, err := exec.LookPath("nginx"); err != nil {
			if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
				f.nginx = "/usr/sbin/nginx"
			}
		}
	}

	dir, err := os.MkdirTemp("", "mosnlite-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// One upstream listener per target keeps their TIME_WAIT port spaces apart.
	results := make([]*result, len(targets))
	type live struct {
		up    *upstream
		proxy *proxy
		addr  string
	}
	lives := make([]*live, len(targets))
	cpuOf := func(l *live) func() (time.Duration, error) {
		if l.proxy == nil {
			return nil // direct: no proxy to measure
		}
		return l.proxy.cpu
	}
	defer func() {
		for _, l := range lives {
			if l == nil {
				continue
			}
			if l.proxy != nil {
				if err := l.proxy.Stop(15 * time.Second); err != nil {
					fmt.Fprintf(stderr, "loadgen: %v\n", err)
				}
			}
			l.up.Close()
		}
	}()
	for i, t := range targets {
		results[i] = &result{Target: t}
		up, err := newUpstream("127.0.0.1:0", f.load.msgSize)
		if err != nil {
			return err
		}
		l := &live{up: up, addr: up.Addr()}
		lives[i] = l
		tdir := dir + "/" + t
		if err := os.Mkdir(tdir, 0o755); err != nil {
			return err
		}
		switch t {
		case "direct":
			results[i].Version = "—"
		case "nginx", "nginx-halfclose":
			// nginx-halfclose: proxy_half_close on, the half-close semantics mosnlite's
			// tcp_proxy always has; plain nginx closes both sides on the first FIN.
			l.proxy, err = startNginx(ctx, nginxOpts{Bin: f.nginx, StreamModule: f.streamModule,
				HalfClose: t == "nginx-halfclose"}, tdir, proxyCPU, up.Addr())
		case "mosnlite":
			l.proxy, err = startMosnlite(ctx, f.mosnlite, tdir, proxyCPU, up.Addr())
		}
		if err != nil {
			results[i].Err = err
			fmt.Fprintf(stderr, "loadgen: %s: %v\n", t, err)
			continue
		}
		if l.proxy != nil {
			l.addr, results[i].Version = l.proxy.addr, l.proxy.Version
			fmt.Fprintf(stderr, "loadgen: %s on %s (pids %v, CPUs %s) → upstream %s\n",
				t, l.addr, l.proxy.Pids, benchproc.CPUsAllowed(l.proxy.Pids[0]), up.Addr())
		}
	}
	fmt.Fprintf(stderr, "loadgen: load tool and upstreams: pid %d, CPUs %s, GOMAXPROCS %d\n",
		os.Getpid(), benchproc.CPUsAllowed(os.Getpid()), runtime.GOMAXPROCS(0))

	// Each round measures every target's bulk window, then every target's connection
	// window, in an order rotated by one target per round: the windows compared with each
	// other run close together in time, and no target always runs first or last (the
	// machine's speed drifts by ±10 % over minutes).
	for round := 1; round <= f.rounds; round++ {
		order := roundOrder(len(targets), round)
		for _, i := range order {
			r, l := results[i], lives[i]
			if r.Err != nil {
				continue
			}
			bw, err := runBulk(ctx, l.addr, l.up.bytes.Load, f.load.bulkConns, f.load.bulkBuf, f.load.opts(cpuOf(l), f.load.bulkMax))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Err = err
				continue
			}
			r.Bulk = append(r.Bulk, bw)
			fmt.Fprintf(stderr, "loadgen: round %d/%d %-15s bulk %.0f MiB/s\n", round, f.rounds, targets[i],
				bw.Count/mib/bw.Elapsed.Seconds())
		}
		for _, i := range order {
			r, l := results[i], lives[i]
			if r.Err != nil {
				continue
			}
			cw, err := runConns(ctx, l.addr, f.load.connWorkers, f.load.msgSize, f.load.opts(cpuOf(l), f.load.connMax))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Err = err
				continue
			}
			r.Conn = append(r.Conn, cw)
			fmt.Fprintf(stderr, "loadgen: round %d/%d %-15s %.0f conns/s\n", round, f.rounds, targets[i],
				cw.Count/cw.Elapsed.Seconds())
		}
	}

	rs := make([]result, len(results))
	for i, r := range results {
		rs[i] = *r
	}
	section := report(f, mach, rs, time.Now().UTC())
	fmt.Fprintln(stdout, section)
	if f.doc != "" {
		if err := updateDoc(f.doc, section); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "loadgen: wrote the results into %s\n", f.doc)
	}
	return nil
}

// report is the markdown section: when, what, where, how, then the tables.
func report(f benchFlags, m benchproc.Machine, rs []result, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Loopback load run, %s\n\n", now.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- command: `%s`\n", f.command)
	fmt.Fprintf(&b, "- machine: %d CPUs, %s; kernel %s; %s\n", m.CPUs, m.Model, m.Kernel, runtime.Version())
	for _, r := range rs {
		if r.Target != "direct" && r.Version != "" {
			fmt.Fprintf(&b, "- %s: %s\n", r.Target, r.Version)
		}
	}
	pin := "not pinned"
	if f.pin {
		pin = fmt.Sprintf("proxy pinned alone on CPU %s, load tool + upstream on CPU %s", f.proxyCPU, f.loadCPU)
	}
	fmt.Fprintf(&b, "- load: %s warm-up then %s measured per window, %d round(s) (medians); bulk: %d stream(s), %d KiB writes; conns: %d workers, %d-byte request and reply; %s\n\n",
		f.load.warmup, f.load.duration, f.rounds, f.load.bulkConns, f.load.bulkBuf>>10, f.load.connWorkers, f.load.msgSize, pin)
	b.WriteString(table(rs))
	measured := false
	for _, r := range rs {
		measured = measured || (r.Target == "mosnlite" && r.Err == nil)
	}
	if !measured {
		b.WriteString("\nmosnlite: not yet measured in this run.\n")
	}
	return b.String()
}

func cmdUpstream(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "address to listen on")
	msg := fs.Int("msg-size", 64, "reply size for request connections (match the client's)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	up, err := newUpstream(*listen, *msg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "loadgen: upstream on %s\n", up.Addr())
	<-ctx.Done()
	closed := make(chan struct{})
	go func() { up.Close(); close(closed) }()
	select {
	case <-closed:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("upstream: connections still open 5s after the stop signal")
	}
}

// cmdClient runs one measurement against an address that leads to a `loadgen upstream`
// (directly or through any proxy), charging the CPU of -pids.
func cmdClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var l loadFlags
	l.register(fs)
	addr := fs.String("addr", "", "address to load (required)")
	mode := fs.String("mode", "bulk", "bulk or conn")
	pidList := fs.String("pids", "", "comma list of proxy pids whose CPU time to measure")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := l.check(); err != nil {
		return err
	}
	if *addr == "" {
		return fmt.Errorf("%w: -addr is required", errUsage)
	}
	var cpu func() (time.Duration, error)
	if *pidList != "" {
		var pids []int
		for _, s := range strings.Split(*pidList, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%w: -pids: %v", errUsage, err)
			}
			pids = append(pids, p)
		}
		cpu = func() (time.Duration, error) { return benchproc.TotalCPU(pids...) }
	}
	r := result{Target: *addr}
	switch *mode {
	case "bulk":
		// The upstream that counts received bytes is another process here, so count what
		// this side wrote.
		w, err := runBulk(ctx, *addr, nil, l.bulkConns, l.bulkBuf, l.opts(cpu, l.bulkMax))
		if err != nil {
			return err
		}
		r.Bulk = []window{w}
	case "conn":
		w, err := runConns(ctx, *addr, l.connWorkers, l.msgSize, l.opts(cpu, l.connMax))
		if err != nil {
			return err
		}
		r.Conn = []window{w}
	default:
		return fmt.Errorf("%w: -mode %q (known: bulk, conn)", errUsage, *mode)
	}
	fmt.Fprint(stdout, table([]result{r}))
	return nil
}

// roundOrder is the order in which round (from 1) measures n targets: the list rotated
// left by round-1.
func roundOrder(n, round int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = (i + round - 1) % n
	}
	return order
}
