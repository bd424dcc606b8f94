// Package benchproc holds the process, CPU and pinning helpers shared by the loopback
// bench programs (test/bench/loadgen, httpload, rpcload): CPU time from /proc/PID/stat,
// whole-machine busy time from /proc/stat, CPU affinity via taskset, host description,
// and starting, watching and stopping a child server process.
package benchproc

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

// ClockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. Linux fixes it at
// 100 for user space on every architecture this runs on.
const ClockTick = 10 * time.Millisecond

// CPUTime is a process's user and system CPU time.
type CPUTime struct{ User, Sys time.Duration }

// Total is user plus system time.
func (c CPUTime) Total() time.Duration { return c.User + c.Sys }

// Sub is c less o, field by field.
func (c CPUTime) Sub(o CPUTime) CPUTime { return CPUTime{c.User - o.User, c.Sys - o.Sys} }

// Add is c plus o, field by field.
func (c CPUTime) Add(o CPUTime) CPUTime { return CPUTime{c.User + o.User, c.Sys + o.Sys} }

func (c CPUTime) String() string { return fmt.Sprintf("user %s sys %s", c.User, c.Sys) }

// ParseStat reads ppid, utime and stime from /proc/PID/stat content. Field 2 (the command
// name) may hold spaces and parentheses, so fields are counted after the last ')'.
func ParseStat(b []byte) (ppid int, c CPUTime, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, c, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 13 {
		return 0, c, fmt.Errorf("stat: %d fields after the name, want at least 13", len(f))
	}
	ppid, err1 := strconv.Atoi(f[4-3])
	ut, err2 := strconv.ParseInt(f[14-3], 10, 64)
	st, err3 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, c, fmt.Errorf("stat: bad ppid/utime/stime %q %q %q", f[1], f[11], f[12])
	}
	return ppid, CPUTime{time.Duration(ut) * ClockTick, time.Duration(st) * ClockTick}, nil
}

// ReadStat is ParseStat of /proc/PID/stat.
func ReadStat(pid int) (ppid int, c CPUTime, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, CPUTime{}, err
	}
	return ParseStat(b)
}

// ProcessCPU is the CPU time of every thread of pid.
func ProcessCPU(pid int) (CPUTime, error) {
	_, c, err := ReadStat(pid)
	return c, err
}

// SumCPU adds the CPU time of pids. Every pid must still exist: a process that went away
// mid-window would make the delta meaningless.
func SumCPU(pids []int) (CPUTime, error) {
	var t CPUTime
	for _, p := range pids {
		c, err := ProcessCPU(p)
		if err != nil {
			return CPUTime{}, fmt.Errorf("cpu of pid %d: %w", p, err)
		}
		t = t.Add(c)
	}
	return t, nil
}

// TotalCPU is the summed user+system CPU time of pids, under the same rule as SumCPU.
func TotalCPU(pids ...int) (time.Duration, error) {
	c, err := SumCPU(pids)
	return c.Total(), err
}

// SystemBusy is the CPU time all CPUs spent not idle since boot (user, nice, system, irq,
// softirq from the first line of /proc/stat; steal and iowait are not work done here).
func SystemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return ParseSystemBusy(b)
}

// ParseSystemBusy is SystemBusy of /proc/stat content.
func ParseSystemBusy(b []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var total int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system (idle iowait) irq softirq
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
	}
	return time.Duration(total) * ClockTick, nil
}

// ChildPIDs lists the processes whose parent is pid (nginx's workers).
func ChildPIDs(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		n, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if pp, _, err := ReadStat(n); err == nil && pp == pid {
			out = append(out, n)
		}
	}
	return out
}

// CPUsAllowed is the Cpus_allowed_list of a process ("0", "0-1"), "?" if unknown.
func CPUsAllowed(pid int) string {
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

// Machine describes the host for a report.
type Machine struct {
	CPUs   int
	Model  string
	Kernel string
}

// ReadMachine reads /proc/cpuinfo and the kernel release; "unknown" where they fail.
func ReadMachine() Machine {
	m := Machine{Model: "unknown", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUs, m.Model = ParseCPUInfo(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// ParseCPUInfo counts "processor" entries and returns the first "model name".
func ParseCPUInfo(b []byte) (n int, model string) {
	model = "unknown"
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "unknown" {
				model = strings.TrimSpace(v)
			}
		}
	}
	return n, model
}

// PinSelf re-executes this program under `taskset -c cpu` unless it already runs there
// (sched_setaffinity from Go would move only the calling thread). envVar marks the
// re-executed process, so a pin that did not take is an error rather than a loop.
func PinSelf(cpu, envVar string) error {
	if CPUsAllowed(os.Getpid()) == cpu {
		return nil
	}
	if os.Getenv(envVar) != "" {
		return fmt.Errorf("re-executed under taskset -c %s but allowed CPUs are %s", cpu, CPUsAllowed(os.Getpid()))
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("pinning needs taskset (util-linux): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), envVar+"=1")
	return syscall.Exec(ts, append([]string{"taskset", "-c", cpu, self}, os.Args[1:]...), env)
}

// Command builds argv, prefixed with `taskset -c cpu` when cpu is not empty (taskset
// execs the program, so the pid is the program's).
func Command(cpu, bin string, args ...string) (*exec.Cmd, error) {
	if cpu == "" {
		return exec.Command(bin, args...), nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("pinning needs taskset (util-linux): %w", err)
	}
	return exec.Command(ts, append([]string{"-c", cpu, bin}, args...)...), nil
}

// FreePort returns a loopback address whose port was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Proc is a server process a bench started.
type Proc struct {
	Name    string
	Version string
	Pids    []int // the processes charged with its CPU time: nginx's master first, then its worker
	Cmd     *exec.Cmd
	Exited  chan struct{} // closed once the process has exited
	LogPath string
}

// CPU is the summed CPU time of p.Pids.
func (p *Proc) CPU() (CPUTime, error) { return SumCPU(p.Pids) }

// Pid is the pid of the started process.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Launch starts cmd with its output in logPath. The child gets SIGTERM if this process
// dies, so an interrupted run leaves no server behind.
func Launch(name string, cmd *exec.Cmd, logPath string) (*Proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = deathSignal()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Exited: make(chan struct{}), LogPath: logPath, Pids: []int{cmd.Process.Pid}}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.Exited)
	}()
	return p, nil
}

// Stop sends SIGTERM and kills the process if it has not exited within timeout.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.Exited:
		return fmt.Errorf("%s had already exited (log %s)", p.Name, p.LogPath)
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
		return nil
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.Exited
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, timeout)
	}
}

// WaitListening polls every addr until it accepts, the process exits, or timeout passes.
func (p *Proc) WaitListening(ctx context.Context, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.Exited:
				return fmt.Errorf("%s exited during start-up:\n%s", p.Name, Tail(p.LogPath, 20))
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not accepting on %s after %s:\n%s", p.Name, addr, timeout, Tail(p.LogPath, 20))
			}
		}
	}
	return nil
}

// Tail is the last lines of the file at path, indented, or a note that it cannot be read.
func Tail(path string, lines int) string {
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
