// Command mosnlite is a multi-protocol sidecar proxy that reads MOSN's config format.
//
//	mosnlite start -c config.json          serve (env MOSNLITE_CONFIG names the file too); SIGHUP reloads it
//	    [--service-node N] [--service-cluster C]   xDS identity (env MOSNLITE_SERVICE_NODE, MOSNLITE_SERVICE_CLUSTER)
//	mosnlite validate -c config.json       check a config; exit 0 valid, 1 not (--strict: unknown fields fail)
//	mosnlite version [-o json]             version, commit, Go version
//
// Global flags, before or after the command: --log-level debug|info|warn|error,
// --log-format console|json.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/server"
	"github.com/mosnlite/mosnlite/pkg/xds"
)

// Set by the linker: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: mosnlite [--log-level L] [--log-format console|json] <command> [flags]

commands:
  start -c FILE               start serving (FILE may also come from $MOSNLITE_CONFIG); SIGHUP reloads FILE
        [--service-node N] [--service-cluster C]  xDS node identity ($MOSNLITE_SERVICE_NODE, $MOSNLITE_SERVICE_CLUSTER)
  validate -c FILE [--strict] check a config: exit 0 when valid, 1 otherwise
  version [-o json]           print version, commit and Go version
`

// globals are the flags every command accepts.
type globals struct {
	logLevel  string
	logFormat string
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "log level: debug, info, warn, error (default: the config's, else info)")
	fs.StringVar(&g.logFormat, "log-format", g.logFormat, "log format: console or json")
}

func run(args []string, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("mosnlite", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() { fmt.Fprint(stderr, usage) }
	g.register(top)
	if err := top.Parse(args); err != nil {
		return 2
	}
	rest := top.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "start":
		return cmdStart(&g, rest, stderr)
	case "validate":
		return cmdValidate(&g, rest, stdout, stderr)
	case "version":
		return cmdVersion(&g, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mosnlite: unknown command %q\n%s", cmd, usage)
	return 2
}

func newFlags(name string, g *globals, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mosnlite "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	return fs
}

func cmdVersion(g *globals, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", g, stderr)
	out := fs.String("o", "text", "output: text or json")
	if fs.Parse(args) != nil {
		return 2
	}
	info := map[string]string{"version": version, "commit": commit, "go": runtime.Version(),
		"platform": runtime.GOOS + "/" + runtime.GOARCH}
	switch *out {
	case "json":
		b, _ := json.Marshal(info)
		fmt.Fprintf(stdout, "%s\n", b)
	case "text":
		fmt.Fprintf(stdout, "mosnlite %s (commit %s, %s, %s)\n", version, commit, info["go"], info["platform"])
	default:
		fmt.Fprintf(stderr, "mosnlite version: -o: unknown %q (known: text, json)\n", *out)
		return 2
	}
	return 0
}

// load reads, defaults and validates a config, printing every problem. It returns nil when
// the config cannot be used.
func load(path string, strict bool, ext *extension.Set, w io.Writer) (*config.Config, bool) {
	cfg, warns, err := config.Load(path, config.ParseOptions{Strict: strict})
	for _, p := range warns {
		fmt.Fprintf(w, "%s: warning: %s\n", path, p.Error())
	}
	if err != nil {
		printProblems(w, path, err)
		return nil, false
	}
	cfg.ApplyDefaults()
	vwarns, err := cfg.Validate()
	for _, p := range vwarns {
		fmt.Fprintf(w, "%s: warning: %s\n", path, p.Error())
	}
	for _, p := range unavailable(cfg, ext) {
		fmt.Fprintf(w, "%s: warning: %s\n", path, p)
	}
	if err != nil {
		printProblems(w, path, err)
		return nil, false
	}
	return cfg, true
}

func printProblems(w io.Writer, path string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			fmt.Fprintf(w, "%s: %s\n", path, line)
		}
	}
}

// unavailable lists config types the format knows but this build does not implement yet;
// `start` refuses them, `validate` only warns.
func unavailable(cfg *config.Config, ext *extension.Set) []string {
	var out []string
	for i, s := range cfg.Servers {
		for j, l := range s.Listeners {
			for k, f := range l.StreamFilters {
				if server.Unbuilt(ext, f.Type) {
					out = append(out, fmt.Sprintf("servers[%d].listeners[%d].stream_filters[%d].type: %q is not available in this build; start refuses it on HTTP listeners", i, j, k, f.Type))
				}
			}
			for k, fc := range l.FilterChains {
				for m, f := range fc.Filters {
					if _, err := ext.NetworkFilters.Get(f.Type); err != nil {
						out = append(out, fmt.Sprintf("servers[%d].listeners[%d].filter_chains[%d].filters[%d].type: %q is not available in this build; start will refuse this listener", i, j, k, m, f.Type))
					}
				}
			}
		}
	}
	return out
}

func cmdValidate(g *globals, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", g, stderr)
	path := fs.String("c", os.Getenv("MOSNLITE_CONFIG"), "config file")
	strict := fs.Bool("strict", false, "unknown fields are errors, not warnings")
	if fs.Parse(args) != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "mosnlite validate: -c FILE is required")
		return 2
	}
	ext, err := builtin.NewSet()
	if err != nil {
		fmt.Fprintln(stderr, "mosnlite: built-in extensions:", err)
		return 1
	}
	cfg, ok := load(*path, *strict, ext, stderr)
	if !ok {
		return 1
	}
	// The xDS bootstrap is only read when the server starts; check it here too.
	if _, err := xds.ParseBootstrap(cfg); err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	// What start builds beyond the config package's checks (filter configs, route
	// domains, TLS, balancer settings, the registry entry), without binding anything.
	if err := server.Check(cfg, ext); err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", *path)
	return 0
}

func cmdStart(g *globals, args []string, stderr io.Writer) int {
	fs := newFlags("start", g, stderr)
	path := fs.String("c", os.Getenv("MOSNLITE_CONFIG"), "config file (env MOSNLITE_CONFIG); SIGHUP re-reads it")
	node := fs.String("service-node", os.Getenv("MOSNLITE_SERVICE_NODE"), "node id presented to an xDS control plane (env MOSNLITE_SERVICE_NODE)")
	clusterName := fs.String("service-cluster", os.Getenv("MOSNLITE_SERVICE_CLUSTER"), "service cluster presented to an xDS control plane (env MOSNLITE_SERVICE_CLUSTER)")
	loops := fs.String("event-loops", cmp.Or(os.Getenv("MOSNLITE_EVENT_LOOPS"), "on"),
		"on: tcp_proxy listeners run on event loops where the platform has them; off: a goroutine per connection (env MOSNLITE_EVENT_LOOPS)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *loops != "on" && *loops != "off" {
		fmt.Fprintf(stderr, "mosnlite start: --event-loops: %q is neither on nor off\n", *loops)
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "mosnlite start: -c FILE (or MOSNLITE_CONFIG) is required")
		return 2
	}
	ext, err := builtin.NewSet()
	if err != nil {
		fmt.Fprintln(stderr, "mosnlite: built-in extensions:", err)
		return 1
	}
	cfg, ok := load(*path, false, ext, stderr)
	if !ok {
		return 1
	}
	lo := log.Options{Level: g.logLevel, Format: g.logFormat}
	if len(cfg.Servers) > 0 {
		s := cfg.Servers[0]
		if lo.Level == "" {
			lo.Level = s.DefaultLogLevel
		}
		lo.Output = s.DefaultLogPath
	}
	logger, level, err := log.New(lo)
	if err != nil {
		fmt.Fprintln(stderr, "mosnlite: log:", err)
		return 1
	}
	defer logger.Sync()
	logger.Info("starting", zap.String("version", version), zap.String("commit", commit),
		zap.String("config", *path))

	// Caught from here on (a SIGHUP during start-up waits in hup instead of killing us).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadLog := logger.Named("reload")
	reread := func() (*config.Config, error) {
		var out strings.Builder
		c, ok := load(*path, false, ext, &out)
		for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
			switch {
			case line == "":
			case strings.Contains(line, ": warning: "):
				reloadLog.Warn(line)
			default:
				reloadLog.Error(line)
			}
		}
		if !ok {
			return nil, fmt.Errorf("%s: %s", *path, strings.ReplaceAll(strings.TrimSpace(out.String()), "\n", "; "))
		}
		return c, nil
	}
	srv, err := server.New(cfg, server.Options{Extensions: ext, Log: logger, Level: level, Load: reread,
		ServiceNode: *node, ServiceCluster: *clusterName, NoEventLoops: *loops == "off"})
	if err != nil {
		logger.Error("cannot start", zap.Error(err))
		fmt.Fprintf(stderr, "mosnlite: %v\n", err)
		return 1
	}
	for name, a := range srv.Addrs() {
		if a != nil {
			logger.Info("listening", zap.String(log.FieldListener, name), zap.Stringer("address", a))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP: re-read -c and reload it, all or nothing; a bad file is logged (each problem
	// with its JSON path) and counted, and the running config stays.
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading", zap.String("config", *path))
				_ = srv.ReloadFromSource() // logged and counted by the server
			}
		}
	}()
	defer func() { stop(); <-hupDone }()
	if err := srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("server stopped with error", zap.Error(err))
		return 1
	}
	return 0
}
