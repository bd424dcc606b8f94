package main

import (
	"bufio"
	"bytes"
	"context"
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

// cpuTime is a process's user and system CPU time.
type cpuTime struct{ User, Sys time.Duration }

func (c cpuTime) Total() time.Duration  { return c.User + c.Sys }
func (c cpuTime) Sub(o cpuTime) cpuTime { return cpuTime{c.User - o.User, c.Sys - o.Sys} }
func (c cpuTime) Add(o cpuTime) cpuTime { return cpuTime{c.User + o.User, c.Sys + o.Sys} }
func (c cpuTime) String() string        { return fmt.Sprintf("user %s sys %s", c.User, c.Sys) }

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// parseStat reads ppid, utime and stime from /proc/PID/stat content. Field 2 (the command
// name) may hold spaces and parentheses, so fields are counted after the last ')'.
func parseStat(b []byte) (ppid int, c cpuTime, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, c, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 { // f[0] is field 3 (state): field N is f[N-3]
		return 0, c, fmt.Errorf("stat: %d fields after the name, want at least 13", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, c, fmt.Errorf("stat: bad ppid/utime/stime %q %q %q", f[1], f[11], f[12])
	}
	return ppid, cpuTime{time.Duration(ut) * clockTick, time.Duration(st) * clockTick}, nil
}

func readStat(pid int) (int, cpuTime, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, cpuTime{}, err
	}
	return parseStat(b)
}

// sumCPU adds the CPU time of pids; every pid must still exist.
func sumCPU(pids []int) (cpuTime, error) {
	var t cpuTime
	for _, p := range pids {
		_, c, err := readStat(p)
		if err != nil {
			return cpuTime{}, fmt.Errorf("cpu of pid %d: %w", p, err)
		}
		t = t.Add(c)
	}
	return t, nil
}

// machineBusy is the non-idle CPU time of all CPUs since boot (user, nice, system, irq,
// softirq of /proc/stat's first line).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var n int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		n += v
	}
	return time.Duration(n) * clockTick, nil
}

// childPIDs lists the processes whose parent is pid (nginx's workers).
func childPIDs(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		n, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if pp, _, err := readStat(n); err == nil && pp == pid {
			out = append(out, n)
		}
	}
	return out
}

// cpusAllowed is the Cpus_allowed_list of a process ("0", "0-1"), "?" if unknown.
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

// machine describes the host for the report.
type machine struct {
	CPUs   int
	Model  string
	Kernel string
}

func readMachine() machine {
	m := machine{Model: "unknown", Kernel: "unknown"}
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
				if m.Model == "unknown" {
					m.Model = strings.TrimSpace(v)
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
	if os.Getenv("HTTPLOAD_PINNED") != "" {
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
	env := append(os.Environ(), "HTTPLOAD_PINNED=1")
	return syscall.Exec(ts, append([]string{"taskset", "-c", cpu, self}, os.Args[1:]...), env)
}

// command builds argv, prefixed with `taskset -c cpu` when cpu is not empty (taskset
// execs the program, so the pid is the program's).
func command(cpu, bin string, args ...string) (*exec.Cmd, error) {
	if cpu == "" {
		return exec.Command(bin, args...), nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("pinning needs taskset (util-linux): %w", err)
	}
	return exec.Command(ts, append([]string{"-c", cpu, bin}, args...)...), nil
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is a server process the harness started.
type proc struct {
	name    string
	version string
	pids    []int // nginx: master first, then its worker
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

func (p *proc) cpu() (cpuTime, error) { return sumCPU(p.pids) }

// launch starts cmd with its output in logPath; the child gets SIGTERM if this process dies.
func launch(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{}), logPath: logPath, pids: []int{cmd.Process.Pid}}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM and kills the process if it has not exited within timeout.
func (p *proc) stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s had already exited (log %s)", p.name, p.logPath)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, timeout)
	}
}

// waitListening polls every addr until it accepts, the process exits, or timeout passes.
func (p *proc) waitListening(ctx context.Context, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited during start-up:\n%s", p.name, tail(p.logPath, 20))
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not accepting on %s after %s:\n%s", p.name, addr, timeout, tail(p.logPath, 20))
			}
		}
	}
	return nil
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "    " + strings.Join(ls, "\n    ")
}
