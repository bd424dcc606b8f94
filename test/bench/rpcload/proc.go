package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU is utime+stime of every thread of pid, from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 (utime) and 15 (stime), counted after the command name
// (which may hold spaces and parentheses).
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseInt(f[14-3], 10, 64)
	st, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick, nil
}

// systemBusy is the non-idle CPU time of all CPUs since boot (user, nice, system, irq,
// softirq of /proc/stat's first line).
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var total int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return time.Duration(total) * clockTick, nil
}

// cpusAllowed is the Cpus_allowed_list of /proc/PID/status.
func cpusAllowed(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

type machine struct {
	CPUs     int
	CPUModel string
	Kernel   string
}

func readMachine() machine {
	m := machine{CPUModel: "unknown", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				m.CPUs++
			case "model name":
				if m.CPUModel == "unknown" {
					m.CPUModel = strings.TrimSpace(v)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// pinSelf re-executes this program under `taskset -c cpu` unless it already runs there
// (sched_setaffinity from Go would move only the calling thread).
func pinSelf(cpu string) error {
	if cpusAllowed(os.Getpid()) == cpu {
		return nil
	}
	if os.Getenv("RPCLOAD_PINNED") != "" {
		return fmt.Errorf("re-executed under taskset -c %s but allowed CPUs are %s", cpu, cpusAllowed(os.Getpid()))
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("pinning needs taskset (util-linux): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "RPCLOAD_PINNED=1")
	return syscall.Exec(ts, append([]string{"taskset", "-c", cpu, self}, os.Args[1:]...), env)
}

// proxyProc is the mosnlite process the bench started.
type proxyProc struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	version string
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

func (p *proxyProc) stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return fmt.Errorf("mosnlite had already exited (log %s)", p.logPath)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("mosnlite did not exit within %s of SIGTERM; killed", timeout)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// mosnliteConf is a MOSN v2 config with one proxy listener per protocol: bolt
// (downstream_protocol bolt), dubbo (X with sub_protocol dubbo, as MOSN writes it) and
// HTTP/1.1, each routed to the bench's upstream for it.
func mosnliteConf(listen, upstream map[string]string, admin string) ([]byte, error) {
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		return nil, err
	}
	portNum, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	type m = map[string]any
	header := func(name, value string) []m { return []m{{"name": name, "value": value, "regex": false}} }
	routers := []m{
		{"router_config_name": "bolt", "virtual_hosts": []m{{"name": "bolt", "domains": []string{"*"},
			"routers": []m{{"match": m{"headers": header("service", benchBoltService)}, "route": m{"cluster_name": "bolt"}}}}}},
		{"router_config_name": "dubbo", "virtual_hosts": []m{{"name": "dubbo", "domains": []string{"*"},
			"routers": []m{{"match": m{"headers": header("service", benchDubboService)}, "route": m{"cluster_name": "dubbo"}}}}}},
		{"router_config_name": "http1", "virtual_hosts": []m{{"name": "http1", "domains": []string{"*"},
			"routers": []m{{"match": m{"prefix": "/"}, "route": m{"cluster_name": "http1"}}}}}},
	}
	listener := func(name string, proxy m) m {
		return m{"name": name, "address": listen[name], "bind_port": true,
			"filter_chains": []m{{"filters": []m{{"type": "proxy", "config": proxy}}}}}
	}
	var listeners []m
	var clusters []m
	for _, p := range []string{protoBolt, protoDubbo, protoHTTP1} {
		if listen[p] == "" {
			continue
		}
		var pc m
		switch p {
		case protoBolt:
			pc = m{"downstream_protocol": "bolt", "router_config_name": "bolt"}
		case protoDubbo:
			pc = m{"downstream_protocol": "X", "extend_config": m{"sub_protocol": "dubbo"}, "router_config_name": "dubbo"}
		case protoHTTP1:
			pc = m{"downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "http1"}
		}
		listeners = append(listeners, listener(p, pc))
		clusters = append(clusters, m{"name": p, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "1s",
			"hosts": []m{{"address": upstream[p]}}})
	}
	cfg := m{
		"servers":         []m{{"default_log_path": "stdout", "routers": routers, "listeners": listeners}},
		"cluster_manager": m{"clusters": clusters},
		"admin":           m{"address": m{"socket_address": m{"address": host, "port_value": portNum}}},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startMosnlite validates a generated config and runs `mosnlite --log-level warn start -c`
// pinned to cpu; it returns the listener address per protocol.
func startMosnlite(ctx context.Context, bin, dir, cpu string, upstream map[string]string) (*proxyProc, map[string]string, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, nil, fmt.Errorf("mosnlite binary: %w (run `make build`)", err)
	}
	listen := map[string]string{}
	for p := range upstream {
		a, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		listen[p] = a
	}
	admin, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	conf, err := mosnliteConf(listen, upstream, admin)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "mosnlite.json")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return nil, nil, err
	}
	if out, err := exec.Command(bin, "validate", "-c", path).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("mosnlite validate -c %s: %w\n%s", path, err, out)
	}
	p := &proxyProc{exited: make(chan struct{}), logPath: filepath.Join(dir, "mosnlite.out"), version: "unknown"}
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		p.version = strings.TrimSpace(string(out))
	}
	args := []string{"--log-level", "warn", "start", "-c", path}
	if cpu != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, nil, fmt.Errorf("pinning needs taskset (util-linux): %w", err)
		}
		p.cmd = exec.Command(ts, append([]string{"-c", cpu, bin}, args...)...)
	} else {
		p.cmd = exec.Command(bin, args...)
	}
	lf, err := os.Create(p.logPath)
	if err != nil {
		return nil, nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		lf.Close()
		return nil, nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for _, a := range listen {
		for {
			c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.exited:
				b, _ := os.ReadFile(p.logPath)
				return nil, nil, fmt.Errorf("mosnlite exited during start-up:\n%s", b)
			case <-ctx.Done():
				_ = p.stop(5 * time.Second)
				return nil, nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				_ = p.stop(5 * time.Second)
				return nil, nil, fmt.Errorf("mosnlite not accepting on %s after 15s", a)
			}
		}
	}
	return p, listen, nil
}
