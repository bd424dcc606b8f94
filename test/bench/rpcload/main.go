// Command rpcload is mosnlite's RPC load generator. `rpcload bench` measures, in one run,
// bolt and dubbo requests through mosnlite and directly to the upstream, and HTTP/1.1
// requests the same two ways for comparison:
//
//   - requests per second and p50/p99 latency with a fixed number of requests in flight
//     (default 64, on one multiplexed connection for bolt and dubbo, on 64 keep-alive
//     connections for HTTP/1.1), each with a 1 KiB payload and a 1 KiB answer;
//   - the proxy's CPU time per request: utime+stime of the mosnlite process from
//     /proc/PID/stat before and after the window.
//
// Each window sends a fixed number of requests (-requests) and ends early at -duration.
// The proxy runs alone on CPU 0 (taskset); this process (load client and the upstreams:
// a bolt server on mosnlite's codec, a Dubbo server whose answer dubbo-go-hessian2
// encoded, a minimal HTTP/1.1 server) re-executes itself on CPU 1.
//
//	rpcload bench [-mosnlite bin/mosnlite] [-protocols bolt,dubbo,http1] [-doc docs/benchmarks.md]
//	rpcload client -proto bolt|dubbo|http1 -addr HOST:PORT [-pid P]   one window against any server
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run1(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "rpcload: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: rpcload bench|client [flags] (-h for each)")

func run1(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr)
	case "client":
		return cmdClient(ctx, args[1:], stdout, stderr)
	}
	return errUsage
}

func dubboService() hessian.Service {
	return hessian.Service{Path: benchDubboService, Interface: benchDubboService, Version: "1.0.0", Method: "echo"}
}

type loadFlags struct {
	requests    int64
	warmup      int64
	duration    time.Duration
	concurrency int
	conns       int
	payload     int
}

func (l *loadFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&l.requests, "requests", 200_000, "requests per measured window")
	fs.Int64Var(&l.warmup, "warmup-requests", 10_000, "requests sent before each measured window")
	fs.DurationVar(&l.duration, "duration", 15*time.Second, "time bound of each window")
	fs.IntVar(&l.concurrency, "concurrency", 64, "requests in flight")
	fs.IntVar(&l.conns, "conns", 1, "bolt/dubbo: connections the in-flight requests share (HTTP/1.1 uses one per request in flight)")
	fs.IntVar(&l.payload, "payload", 1024, "request and response payload bytes")
}

func (l *loadFlags) check() error {
	if l.requests < 1 || l.warmup < 0 || l.duration <= 0 || l.concurrency < 1 || l.conns < 1 ||
		l.conns > l.concurrency || l.payload < 1 {
		return fmt.Errorf("%w: counts and sizes must be positive, -conns at most -concurrency", errUsage)
	}
	return nil
}

func (l *loadFlags) shape(proto, addr string, n int64) shape {
	return shape{proto: proto, addr: addr, concurrency: l.concurrency, conns: l.conns, payload: l.payload,
		requests: n, duration: l.duration}
}

type benchFlags struct {
	load      loadFlags
	mosnlite  string
	protocols string
	targets   string
	rounds    int
	pin       bool
	proxyCPU  string
	loadCPU   string
	doc       string
	command   string
	note      string
}

// result is every window of one (protocol, target).
type result struct {
	Proto, Target string
	Windows       []*window
	Other         []float64 // other processes' CPU share during each window
	Err           error
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rpcload bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	f.load.register(fs)
	fs.StringVar(&f.mosnlite, "mosnlite", "bin/mosnlite", "mosnlite binary")
	fs.StringVar(&f.protocols, "protocols", "bolt,dubbo,http1", "comma list of bolt, dubbo, http1")
	fs.StringVar(&f.targets, "targets", "direct,mosnlite", "comma list of direct, mosnlite")
	fs.IntVar(&f.rounds, "rounds", 3, "repeat every window; the report shows medians")
	fs.BoolVar(&f.pin, "pin", true, "pin mosnlite to -proxy-cpu and this process to -load-cpu (needs 2 CPUs)")
	fs.StringVar(&f.proxyCPU, "proxy-cpu", "0", "CPU for mosnlite")
	fs.StringVar(&f.loadCPU, "load-cpu", "1", "CPU for the load client and the upstreams")
	fs.StringVar(&f.doc, "doc", "", "markdown file whose rpcload section is rewritten with the results")
	fs.StringVar(&f.command, "command", "", "command line recorded in the report (default: this one)")
	fs.StringVar(&f.note, "note", "", "a note line for the report (e.g. that the machine was shared)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.load.check(); err != nil {
		return err
	}
	protos := strings.Split(f.protocols, ",")
	for _, p := range protos {
		if p != protoBolt && p != protoDubbo && p != protoHTTP1 {
			return fmt.Errorf("%w: -protocols: unknown %q", errUsage, p)
		}
	}
	targets := strings.Split(f.targets, ",")
	for _, t := range targets {
		if t != "direct" && t != "mosnlite" {
			return fmt.Errorf("%w: -targets: unknown %q", errUsage, t)
		}
	}
	if f.command == "" {
		f.command = "rpcload bench " + strings.Join(args, " ")
	}
	mach := benchproc.ReadMachine()
	proxyCPU := ""
	if f.pin {
		if mach.CPUs < 2 {
			fmt.Fprintf(stderr, "rpcload: %d CPU(s): running without pinning\n", mach.CPUs)
			f.pin = false
		} else if err := benchproc.PinSelf(f.loadCPU, "RPCLOAD_PINNED"); err != nil {
			return err
		} else {
			proxyCPU = f.proxyCPU
		}
	}

	payload := make([]byte, f.load.payload)
	for i := range payload {
		payload[i] = byte('A' + i%26)
	}
	boltUp, err := rpcpeer.StartBoltServer(rpcpeer.BoltServerOptions{Name: "bench"})
	if err != nil {
		return err
	}
	defer boltUp.Close()
	dubboUp, err := rpcpeer.StartDubboServer(rpcpeer.DubboServerOptions{Name: "bench", Fast: true, FastValue: payload})
	if err != nil {
		return err
	}
	defer dubboUp.Close()
	httpUp, err := startHTTPUpstream(f.load.payload)
	if err != nil {
		return err
	}
	defer httpUp.Close()
	direct := map[string]string{protoBolt: boltUp.Addr(), protoDubbo: dubboUp.Addr(), protoHTTP1: httpUp.Addr()}

	var px *benchproc.Proc
	proxied := map[string]string{}
	var startErr error
	if slices.Contains(targets, "mosnlite") {
		dir, err := os.MkdirTemp("", "mosnlite-rpcload-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		px, proxied, startErr = startMosnlite(ctx, f.mosnlite, dir, proxyCPU, direct)
		if startErr != nil {
			fmt.Fprintf(stderr, "rpcload: mosnlite: %v\n", startErr)
		} else {
			defer func() {
				if err := px.Stop(15 * time.Second); err != nil {
					fmt.Fprintf(stderr, "rpcload: %v\n", err)
				}
			}()
			fmt.Fprintf(stderr, "rpcload: mosnlite pid %d on CPUs %s: %v\n", px.Pid(), benchproc.CPUsAllowed(px.Pid()), proxied)
		}
	}
	fmt.Fprintf(stderr, "rpcload: load and upstreams: pid %d, CPUs %s, GOMAXPROCS %d\n",
		os.Getpid(), benchproc.CPUsAllowed(os.Getpid()), runtime.GOMAXPROCS(0))

	var results []*result
	for _, p := range protos {
		for _, t := range targets {
			r := &result{Proto: p, Target: t}
			if t == "mosnlite" && startErr != nil {
				r.Err = startErr
			}
			results = append(results, r)
		}
	}
	for round := 1; round <= f.rounds; round++ {
		for _, r := range results {
			if r.Err != nil {
				continue
			}
			addr := direct[r.Proto]
			var cpu func() (time.Duration, error)
			if r.Target == "mosnlite" {
				addr = proxied[r.Proto]
				cpu = func() (time.Duration, error) { return benchproc.TotalCPU(px.Pid()) }
			}
			if f.load.warmup > 0 {
				if w, err := run(ctx, f.load.shape(r.Proto, addr, f.load.warmup), nil); err != nil || w.Errors > 0 {
					r.Err = fmt.Errorf("warm-up: %v %s", err, firstErr(w))
					continue
				}
			}
			busy0, _ := benchproc.SystemBusy()
			self0, _ := benchproc.TotalCPU(os.Getpid())
			w, err := run(ctx, f.load.shape(r.Proto, addr, f.load.requests), cpu)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Err = err
				continue
			}
			busy1, _ := benchproc.SystemBusy()
			self1, _ := benchproc.TotalCPU(os.Getpid())
			other := busy1 - busy0 - (self1 - self0)
			if w.ProxyCPU > 0 {
				other -= w.ProxyCPU
			}
			r.Windows = append(r.Windows, w)
			r.Other = append(r.Other, max(0, other.Seconds()/w.Elapsed.Seconds()))
			cpuNote := ""
			if c := w.cpuPerReq(); c >= 0 {
				cpuNote = fmt.Sprintf(", proxy CPU %.1f µs/req", c)
			}
			fmt.Fprintf(stderr, "rpcload: round %d/%d %-5s %-8s %8.0f req/s p50 %s p99 %s%s, errors %d\n", round, f.rounds,
				r.Proto, r.Target, w.rate(), w.quantile(0.5).Round(time.Microsecond), w.quantile(0.99).Round(time.Microsecond),
				cpuNote, w.Errors)
		}
	}
	version := ""
	if px != nil {
		version = px.Version
	}
	section := report(f, mach, results, version, time.Now().UTC())
	fmt.Fprintln(stdout, section)
	if f.doc != "" {
		if err := updateDoc(f.doc, section); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "rpcload: wrote the results into %s\n", f.doc)
	}
	return nil
}

func firstErr(w *window) string {
	if w == nil {
		return ""
	}
	return w.FirstErr
}

func cmdClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rpcload client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var l loadFlags
	l.register(fs)
	proto := fs.String("proto", protoBolt, "bolt, dubbo or http1")
	addr := fs.String("addr", "", "address to load (required); bolt service "+benchBoltService+", dubbo "+benchDubboService)
	pid := fs.Int("pid", 0, "proxy pid whose CPU time to measure")
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
	if *pid > 0 {
		cpu = func() (time.Duration, error) { return benchproc.TotalCPU(*pid) }
	}
	if l.warmup > 0 {
		if _, err := run(ctx, l.shape(*proto, *addr, l.warmup), nil); err != nil {
			return err
		}
	}
	w, err := run(ctx, l.shape(*proto, *addr, l.requests), cpu)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, table([]*result{{Proto: *proto, Target: *addr, Windows: []*window{w}, Other: []float64{0}}}))
	return nil
}
