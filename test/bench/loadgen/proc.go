package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. Linux fixes it at
// 100 for user space on every architecture this runs on.
const clockTick = 10 * time.Millisecond

func selfPID() int { return os.Getpid() }

// procStat is what the harness uses from /proc/PID/stat.
type procStat struct {
	PPID int
	CPU  time.Duration // utime + stime, all threads of the process
}

// parseStat reads /proc/PID/stat content. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procStat{}, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat: %d fields after the name, want at least 13", len(f))
	}
	ppid, err1 := strconv.Atoi(f[4-3])
	ut, err2 := strconv.ParseInt(f[14-3], 10, 64)
	st, err3 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, fmt.Errorf("stat: bad ppid/utime/stime %q %q %q", f[1], f[11], f[12])
	}
	return procStat{PPID: ppid, CPU: time.Duration(ut+st) * clockTick}, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// processCPU is utime+stime of one process.
func processCPU(pid int) (time.Duration, error) {
	s, err := readStat(pid)
	return s.CPU, err
}

// systemBusy is the CPU time all CPUs spent not idle since boot (user, nice, system, irq,
// softirq from the first line of /proc/stat; steal and iowait are not work done here).
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseSystemBusy(b)
}

func parseSystemBusy(b []byte) (time.Duration, error) {
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
	return time.Duration(total) * clockTick, nil
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
		s, err := readStat(n)
		if err == nil && s.PPID == pid {
			out = append(out, n)
		}
	}
	return out
}

// sumCPU adds the CPU time of pids. Every pid must still exist: a process that went away
// mid-window would make the delta meaningless.
func sumCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, p := range pids {
		c, err := processCPU(p)
		if err != nil {
			return 0, fmt.Errorf("cpu of pid %d: %w", p, err)
		}
		total += c
	}
	return total, nil
}

// cpusAllowed is the Cpus_allowed_list line of /proc/PID/status ("0", "0-1").
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
	CPUs     int
	CPUModel string
	Kernel   string
}

func readMachine() machine {
	m := machine{CPUModel: "unknown", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUs, m.CPUModel = parseCPUInfo(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// parseCPUInfo counts "processor" entries and returns the first "model name".
func parseCPUInfo(b []byte) (n int, model string) {
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
