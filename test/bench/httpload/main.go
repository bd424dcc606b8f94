// Command httpload is mosnlite's HTTP load harness (`make bench-http`). In one run it
// measures HTTP/1.1 (wrk: one thread, keep-alive connections) and HTTP/2 (h2load:
// connections × concurrent streams, h2c prior knowledge) GETs of a 1 KiB body through
// mosnlite, through nginx as a reverse proxy, and direct to the upstream, and reports
// requests/s, p50/p99 latency and the proxy's CPU time per request (utime+stime of all its
// processes from /proc/PID/stat, before and after the measured window), with ratios to
// nginx from the same run.
//
// The proxy under test runs alone on CPU 0; the load tool, the upstream (an nginx that
// answers every request itself) and this program run on CPU 1. mosnlite runs twice per
// protocol: with GOMAXPROCS unset (the Go runtime takes it from the one-CPU affinity mask)
// and with GOMAXPROCS=1 set. Optionally a CPU profile of mosnlite under the HTTP/1.1 (or h2) load
// is taken from its admin endpoint /debug/pprof/profile.
//
//	httpload [-protocols h1,h2] [-targets direct,nginx,mosnlite] [-doc docs/benchmarks.md]
//	         [-profile bin/bench/http-cpu.txt] ...    (-h lists every flag)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "httpload: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: httpload [flags] (-h lists them)")

type flags struct {
	protocols, targets    string
	mosnlite, nginx       string
	wrk, h2load, goTool   string
	warmup, duration      time.Duration
	h1Conns               int
	h2Conns, h2Streams    int
	body                  int
	rounds                int
	gomaxprocs1           bool
	pin                   bool
	proxyCPU, loadCPU     string
	doc, command, note    string
	profile, profileProto string
	profileDur            time.Duration
}

func (f *flags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.protocols, "protocols", "h1,h2", "comma list of h1 (wrk) and h2 (h2load)")
	fs.StringVar(&f.targets, "targets", "direct,nginx,mosnlite", "comma list of direct, nginx, mosnlite")
	fs.StringVar(&f.mosnlite, "mosnlite", "bin/mosnlite", "mosnlite binary")
	fs.StringVar(&f.nginx, "nginx", "nginx", "nginx binary (PATH, then /usr/sbin)")
	fs.StringVar(&f.wrk, "wrk", "wrk", "wrk binary")
	fs.StringVar(&f.h2load, "h2load", "h2load", "h2load binary (nghttp2-client)")
	fs.StringVar(&f.goTool, "go", "go", "go command, for `go tool pprof` on the profile")
	fs.DurationVar(&f.warmup, "warmup", 2*time.Second, "load before each measured window (whole seconds; 0: none)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "measured window (whole seconds)")
	fs.IntVar(&f.h1Conns, "h1-conns", 64, "HTTP/1.1: wrk keep-alive connections (one thread)")
	fs.IntVar(&f.h2Conns, "h2-conns", 8, "HTTP/2: h2load connections")
	fs.IntVar(&f.h2Streams, "h2-streams", 8, "HTTP/2: concurrent streams per connection")
	fs.IntVar(&f.body, "body", 1024, "response body size in bytes")
	fs.IntVar(&f.rounds, "rounds", 1, "repeat every measurement, targets alternating; the report shows medians")
	fs.BoolVar(&f.gomaxprocs1, "gomaxprocs1", true, "also run mosnlite with GOMAXPROCS=1 set explicitly")
	fs.BoolVar(&f.pin, "pin", true, "pin the proxy to -proxy-cpu, everything else to -load-cpu (needs 2 CPUs)")
	fs.StringVar(&f.proxyCPU, "proxy-cpu", "0", "CPU of the proxy under test")
	fs.StringVar(&f.loadCPU, "load-cpu", "1", "CPU of the load tool, the upstream and this program")
	fs.StringVar(&f.doc, "doc", "", "markdown file whose httpload section is rewritten (e.g. docs/benchmarks.md)")
	fs.StringVar(&f.command, "command", "", "command line recorded in the report (default: this one)")
	fs.StringVar(&f.note, "note", "", "a sentence added to the report (e.g. that the machine was shared)")
	fs.StringVar(&f.profile, "profile", "", "write `go tool pprof -top` of mosnlite under HTTP/1.1 load here (raw profile beside it, .pprof)")
	fs.DurationVar(&f.profileDur, "profile-seconds", 5*time.Second, "length of the CPU profile")
	fs.StringVar(&f.profileProto, "profile-protocol", "h1", "the load under which -profile is taken: h1 or h2")
}

func (f *flags) check() error {
	if f.profileProto != "h1" && f.profileProto != "h2" {
		return fmt.Errorf("%w: -profile-protocol: h1 or h2", errUsage)
	}
	if f.duration < time.Second || f.warmup < 0 || f.h1Conns < 1 || f.h2Conns < 1 || f.h2Streams < 1 || f.body < 0 || f.rounds < 1 {
		return fmt.Errorf("%w: -duration must be at least 1s; sizes, counts and -rounds positive", errUsage)
	}
	for _, p := range strings.Split(f.protocols, ",") {
		if p != "h1" && p != "h2" {
			return fmt.Errorf("%w: -protocols: unknown %q (known: h1, h2)", errUsage, p)
		}
	}
	for _, t := range strings.Split(f.targets, ",") {
		if t != "direct" && t != "nginx" && t != "mosnlite" {
			return fmt.Errorf("%w: -targets: unknown %q (known: direct, nginx, mosnlite)", errUsage, t)
		}
	}
	return nil
}

// window is one measured run against one target.
type window struct {
	Run      toolRun
	Proxy    benchproc.CPUTime // delta over the window; zero for direct
	Upstream benchproc.CPUTime
	Busy     time.Duration // whole machine, delta
	Wall     time.Duration
}

// row is one target of one protocol over all rounds.
type row struct {
	Proto   string // "h1", "h2"
	Target  string // "direct", "nginx", "mosnlite", "mosnlite GOMAXPROCS=1"
	Version string
	Err     error
	Windows []window
}

// live is a row's running proxy and the address the load tool uses.
type live struct {
	row   *row
	addr  string
	proxy *benchproc.Proc // nil: direct
	admin string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("httpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.check(); err != nil {
		return err
	}
	if f.command == "" {
		f.command = "httpload " + strings.Join(args, " ")
	}
	mach := benchproc.ReadMachine()
	proxyCPU, loadCPU := "", ""
	if f.pin {
		if mach.CPUs < 2 {
			fmt.Fprintf(stderr, "httpload: %d CPU(s): running without pinning\n", mach.CPUs)
			f.pin = false
		} else if err := benchproc.PinSelf(f.loadCPU, "HTTPLOAD_PINNED"); err != nil {
			return err
		} else {
			proxyCPU, loadCPU = f.proxyCPU, f.loadCPU
		}
	}
	for _, t := range []struct {
		flag  *string
		proto string
	}{{&f.wrk, "h1"}, {&f.h2load, "h2"}} {
		if !strings.Contains(f.protocols, t.proto) {
			continue
		}
		p, err := exec.LookPath(*t.flag)
		if err != nil {
			return fmt.Errorf("%s not found (test/bench/install-http-tools.sh installs it): %w", *t.flag, err)
		}
		*t.flag = p
	}

	dir, err := os.MkdirTemp("", "mosnlite-httpload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var stops []*benchproc.Proc
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			if err := stops[i].Stop(15 * time.Second); err != nil {
				fmt.Fprintf(stderr, "httpload: %v\n", err)
			}
		}
	}()

	// The upstream: HTTP/1.1 and h2c, on the load CPU.
	upH1, err := benchproc.FreePort()
	if err != nil {
		return err
	}
	upH2, err := benchproc.FreePort()
	if err != nil {
		return err
	}
	upDir := filepath.Join(dir, "upstream")
	up, err := startNginx(ctx, "upstream nginx", f.nginx, upDir, loadCPU,
		func(ul string) string { return upstreamConf(upDir, ul, upH1, upH2, f.body) }, upH1, upH2)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	stops = append(stops, up)
	fmt.Fprintf(stderr, "httpload: upstream %s on %s (h1) and %s (h2c), pids %v, CPUs %s\n",
		up.Version, upH1, upH2, up.Pids, benchproc.CPUsAllowed(up.Pids[0]))

	targets := strings.Split(f.targets, ",")
	var ngx *benchproc.Proc
	var ngxH1, ngxH2 string
	ngxErr := error(nil)
	if strings.Contains(f.targets, "nginx") {
		ngxDir := filepath.Join(dir, "nginx")
		if ngxH1, err = benchproc.FreePort(); err != nil {
			return err
		}
		if ngxH2, err = benchproc.FreePort(); err != nil {
			return err
		}
		ngx, ngxErr = startNginx(ctx, "nginx", f.nginx, ngxDir, proxyCPU,
			func(ul string) string { return proxyConf(ngxDir, ul, ngxH1, ngxH2, upH1) }, ngxH1, ngxH2)
		if ngxErr == nil {
			stops = append(stops, ngx)
			fmt.Fprintf(stderr, "httpload: nginx proxy on %s (h1) and %s (h2c), pids %v, CPUs %s\n",
				ngxH1, ngxH2, ngx.Pids, benchproc.CPUsAllowed(ngx.Pids[0]))
		}
	}
	fmt.Fprintf(stderr, "httpload: this program: pid %d, CPUs %s\n", os.Getpid(), benchproc.CPUsAllowed(os.Getpid()))

	var rows []*row
	for _, proto := range strings.Split(f.protocols, ",") {
		var lives []*live
		for _, t := range targets {
			switch t {
			case "direct":
				addr := upH1
				if proto == "h2" {
					addr = upH2
				}
				r := &row{Proto: proto, Target: "direct", Version: "—"}
				lives = append(lives, &live{row: r, addr: addr})
			case "nginx":
				r := &row{Proto: proto, Target: "nginx", Err: ngxErr}
				l := &live{row: r, proxy: ngx, addr: ngxH1}
				if proto == "h2" {
					l.addr = ngxH2
				}
				if ngx != nil {
					r.Version = ngx.Version
				}
				lives = append(lives, l)
			case "mosnlite":
				down := map[string]string{"h1": "Http1", "h2": "Http2"}[proto]
				variants := []struct{ name, env string }{{"mosnlite", ""}}
				if f.gomaxprocs1 {
					variants = append(variants, struct{ name, env string }{"mosnlite GOMAXPROCS=1", "GOMAXPROCS=1"})
				}
				for i, v := range variants {
					r := &row{Proto: proto, Target: v.name}
					var env []string
					if v.env != "" {
						env = []string{v.env}
					}
					mdir := filepath.Join(dir, fmt.Sprintf("mosnlite-%s-%d", proto, i))
					p, addr, admin, err := startMosnlite(ctx, f.mosnlite, mdir, proxyCPU, upH1, down, env)
					r.Err = err
					if err != nil {
						fmt.Fprintf(stderr, "httpload: %s %s: %v\n", proto, v.name, err)
					} else {
						stops = append(stops, p)
						r.Version = p.Version
						fmt.Fprintf(stderr, "httpload: %s %s on %s (pid %d, CPUs %s, admin %s)\n",
							proto, v.name, addr, p.Pids[0], benchproc.CPUsAllowed(p.Pids[0]), admin)
					}
					lives = append(lives, &live{row: r, proxy: p, addr: addr, admin: admin})
				}
			}
		}
		for round := 1; round <= f.rounds; round++ {
			for _, l := range lives {
				if l.row.Err != nil {
					continue
				}
				w, err := measure(ctx, f, proto, l, loadCPU, up, dir)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					l.row.Err = err
					fmt.Fprintf(stderr, "httpload: %s %s: %v\n", proto, l.row.Target, err)
					continue
				}
				l.row.Windows = append(l.row.Windows, w)
				perReq := "—"
				if l.proxy != nil {
					perReq = fmt.Sprintf("%.1f µs/req", micros(w.Proxy.Total())/w.Run.Requests)
				}
				fmt.Fprintf(stderr, "httpload: round %d/%d %s %-22s %8.0f req/s  p50 %-9s p99 %-9s proxy CPU %s\n",
					round, f.rounds, proto, l.row.Target, w.Run.RPS, w.Run.P50, w.Run.P99, perReq)
			}
		}
		if proto == f.profileProto && f.profile != "" {
			for _, l := range lives {
				if l.row.Target == "mosnlite" && l.row.Err == nil {
					if err := profile(ctx, f, proto, l, loadCPU); err != nil {
						fmt.Fprintf(stderr, "httpload: profile: %v\n", err)
					} else {
						fmt.Fprintf(stderr, "httpload: wrote %s\n", f.profile)
					}
				}
			}
		}
		// Stop this protocol's mosnlite processes before the next protocol's run.
		for _, l := range lives {
			if l.proxy == nil || l.proxy == ngx {
				continue
			}
			if err := l.proxy.Stop(15 * time.Second); err != nil {
				fmt.Fprintf(stderr, "httpload: %v\n", err)
			}
			for i, p := range stops {
				if p == l.proxy {
					stops = append(stops[:i], stops[i+1:]...)
					break
				}
			}
		}
		rows = append(rows, lives2rows(lives)...)
	}

	section := report(f, mach, up.Version, rows, time.Now().UTC())
	fmt.Fprintln(stdout, section)
	if f.doc != "" {
		if err := updateDoc(f.doc, section); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "httpload: wrote the results into %s\n", f.doc)
	}
	return nil
}

func lives2rows(ls []*live) []*row {
	out := make([]*row, len(ls))
	for i, l := range ls {
		out[i] = l.row
	}
	return out
}

// loadArgs is the load tool's command line for proto against addr.
func loadArgs(f flags, proto, addr string, d time.Duration, logFile string) []string {
	url := "http://" + addr + "/"
	if proto == "h1" {
		return wrkArgs(f.wrk, f.h1Conns, d, url)
	}
	return h2loadArgs(f.h2load, f.h2Conns, f.h2Streams, d, url, logFile)
}

func parseTool(proto string, out []byte) (toolRun, error) {
	if proto == "h1" {
		return parseWrk(out)
	}
	return parseH2load(out)
}

// measure runs a warm-up, then the measured window with CPU read before and after.
func measure(ctx context.Context, f flags, proto string, l *live, loadCPU string, up *benchproc.Proc, dir string) (window, error) {
	var w window
	bound := f.warmup + f.duration + 30*time.Second
	if f.warmup > 0 {
		out, _, err := runTool(ctx, loadCPU, bound, loadArgs(f, proto, l.addr, f.warmup, "")...)
		if err != nil {
			return w, fmt.Errorf("warm-up: %w", err)
		}
		if r, err := parseTool(proto, out); err != nil {
			return w, fmt.Errorf("warm-up: %w", err)
		} else if r.Requests == 0 {
			return w, fmt.Errorf("warm-up: no request completed:\n%s", out)
		}
	}
	logFile := ""
	if proto == "h2" {
		logFile = filepath.Join(dir, "h2load.log")
		defer os.Remove(logFile)
	}
	var p0, p1 benchproc.CPUTime
	var err error
	if l.proxy != nil {
		if p0, err = l.proxy.CPU(); err != nil {
			return w, err
		}
	}
	u0, err := up.CPU()
	if err != nil {
		return w, err
	}
	b0, err := benchproc.SystemBusy()
	if err != nil {
		return w, err
	}
	t0 := time.Now()
	out, loadCPUTime, err := runTool(ctx, loadCPU, bound, loadArgs(f, proto, l.addr, f.duration, logFile)...)
	w.Wall = time.Since(t0)
	if err != nil {
		return w, err
	}
	if l.proxy != nil {
		if p1, err = l.proxy.CPU(); err != nil {
			return w, err
		}
	}
	u1, err := up.CPU()
	if err != nil {
		return w, err
	}
	b1, err := benchproc.SystemBusy()
	if err != nil {
		return w, err
	}
	w.Proxy, w.Upstream, w.Busy = p1.Sub(p0), u1.Sub(u0), b1-b0
	w.Run, err = parseTool(proto, out)
	if err != nil {
		return w, err
	}
	w.Run.LoadCPU = loadCPUTime
	if w.Run.Requests == 0 {
		return w, fmt.Errorf("no request completed:\n%s", out)
	}
	if logFile != "" {
		p50, p99, _, err := percentilesFromLog(logFile)
		if err != nil {
			w.Run.LatNote = "h2load gives min/max/mean only and its --log-file could not be read: " + err.Error()
		} else {
			w.Run.P50, w.Run.P99, w.Run.LatNote = p50, p99, "h2load --log-file, nearest rank"
		}
	}
	return w, nil
}

// profile takes a CPU profile of mosnlite from its admin endpoint under proto's load, and
// writes `go tool pprof -top` (flat, then cumulative) to f.profile and the raw profile
// beside it.
func profile(ctx context.Context, f flags, proto string, l *live, loadCPU string) error {
	if err := os.MkdirAll(filepath.Dir(f.profile), 0o755); err != nil {
		return err
	}
	d := f.profileDur + 3*time.Second
	type res struct {
		out []byte
		err error
	}
	done := make(chan res, 1)
	go func() {
		out, _, err := runTool(ctx, loadCPU, d+30*time.Second, loadArgs(f, proto, l.addr, d, "")...)
		done <- res{out, err}
	}()
	select {
	case <-time.After(time.Second):
	case r := <-done:
		return fmt.Errorf("load tool ended early: %v", r.err)
	}
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", l.admin, secs(f.profileDur))
	cctx, cancel := context.WithTimeout(ctx, f.profileDur+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, raw)
		}
	}
	r := <-done
	if err != nil {
		return err
	}
	if r.err != nil {
		return fmt.Errorf("load tool during the profile: %w", r.err)
	}
	wr, perr := parseTool(proto, r.out)
	rawPath := strings.TrimSuffix(f.profile, filepath.Ext(f.profile)) + ".pprof"
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# mosnlite CPU profile under %s load (test/bench/httpload)\n", protoInfo[proto].title)
	fmt.Fprintf(&b, "# %s; GET %s during `%s`\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), url,
		strings.Join(append([]string{filepath.Base(loadArgs(f, proto, l.addr, d, "")[0])}, loadArgs(f, proto, l.addr, d, "")[1:]...), " "))
	if perr == nil {
		fmt.Fprintf(&b, "# load over the whole %s: %.0f req/s; raw profile: %s\n", d, wr.RPS, rawPath)
	}
	for _, mode := range [][]string{{"-top"}, {"-top", "-cum"}} {
		args := append([]string{"tool", "pprof"}, mode...)
		args = append(args, "-nodecount=45", f.mosnlite, rawPath)
		out, err := exec.CommandContext(ctx, f.goTool, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w\n%s", f.goTool, strings.Join(args, " "), err, out)
		}
		fmt.Fprintf(&b, "\n## go tool pprof %s\n\n%s", strings.Join(mode, " "), out)
	}
	return os.WriteFile(f.profile, []byte(b.String()), 0o644)
}

func goVersion() string { return runtime.Version() }
