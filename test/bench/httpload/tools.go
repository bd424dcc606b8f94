package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

// toolRun is what one wrk or h2load run reported.
type toolRun struct {
	Requests float64       // completed requests (wrk: all responses; h2load: succeeded)
	Elapsed  time.Duration // the tool's own measured duration
	RPS      float64
	P50, P99 time.Duration     // -1: not known
	Mean     time.Duration     // -1: not known
	Errors   int64             // socket errors, non-2xx/3xx, failed/errored/timed-out requests
	LatNote  string            // where the percentiles come from
	LoadCPU  benchproc.CPUTime // the tool's own CPU (rusage)
}

// runTool runs argv pinned to cpu, bounded by timeout, and returns its stdout and CPU.
func runTool(ctx context.Context, cpu string, timeout time.Duration, argv ...string) ([]byte, benchproc.CPUTime, error) {
	cmd, err := benchproc.Command(cpu, argv[0], argv[1:]...)
	if err != nil {
		return nil, benchproc.CPUTime{}, err
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return nil, benchproc.CPUTime{}, fmt.Errorf("%s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return nil, benchproc.CPUTime{}, fmt.Errorf("%s did not finish within %s", strings.Join(argv, " "), timeout)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return nil, benchproc.CPUTime{}, ctx.Err()
	}
	st := cmd.ProcessState
	c := benchproc.CPUTime{User: st.UserTime(), Sys: st.SystemTime()}
	if werr != nil {
		return nil, c, fmt.Errorf("%s: %w\n%s%s", strings.Join(argv, " "), werr, out.String(), errb.String())
	}
	return out.Bytes(), c, nil
}

// secs renders a duration as whole seconds (at least 1) for wrk's -d and h2load's -D.
func secs(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }

// wrkArgs: one thread, conns keep-alive connections, GET url for d.
func wrkArgs(bin string, conns int, d time.Duration, url string) []string {
	return []string{bin, "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", secs(d)), "--latency", url}
}

// h2loadArgs: conns connections with streams concurrent streams each, for d (h2c prior
// knowledge for an http:// URL). logFile, when set, gets one line per request.
func h2loadArgs(bin string, conns, streams int, d time.Duration, url, logFile string) []string {
	a := []string{bin, fmt.Sprintf("-c%d", conns), fmt.Sprintf("-m%d", streams), "-t1", fmt.Sprintf("-D%d", secs(d))}
	if logFile != "" {
		a = append(a, "--log-file="+logFile)
	}
	return append(a, url)
}

var (
	wrkTotalRE   = regexp.MustCompile(`(\d+) requests in ([0-9.]+\w+),`)
	wrkRPSRE     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPctRE     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+\w+)\s*$`)
	wrkLatRE     = regexp.MustCompile(`(?m)^\s+Latency\s+([0-9.]+\w+)\s`)
	wrkSockRE    = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRE  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	h2FinishedRE = regexp.MustCompile(`finished in ([0-9.]+\w+), ([0-9.]+) req/s`)
	h2ReqRE      = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2TimeRE     = regexp.MustCompile(`time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)`)
)

// parseDur reads the tools' durations: "850.00us", "1.23ms", "10.00s", "2.00m", "1.5h".
func parseDur(s string) (time.Duration, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("duration %q: no number or unit", s)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	unit := map[string]time.Duration{"ns": time.Nanosecond, "us": time.Microsecond, "µs": time.Microsecond,
		"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[s[i:]]
	if unit == 0 {
		return 0, fmt.Errorf("duration %q: unknown unit", s)
	}
	return time.Duration(v * float64(unit)), nil
}

// parseWrk reads `wrk --latency` output.
func parseWrk(out []byte) (toolRun, error) {
	r := toolRun{P50: -1, P99: -1, Mean: -1, LatNote: "wrk --latency"}
	m := wrkTotalRE.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no \"N requests in T\" line in:\n%s", out)
	}
	r.Requests, _ = strconv.ParseFloat(string(m[1]), 64)
	el, err := parseDur(string(m[2]))
	if err != nil {
		return r, fmt.Errorf("wrk: %w", err)
	}
	r.Elapsed = el
	if m := wrkRPSRE.FindSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	} else if el > 0 {
		r.RPS = r.Requests / el.Seconds()
	}
	for _, m := range wrkPctRE.FindAllSubmatch(out, -1) {
		d, err := parseDur(string(m[2]))
		if err != nil {
			return r, fmt.Errorf("wrk: %w", err)
		}
		if string(m[1]) == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := wrkLatRE.FindSubmatch(out); m != nil {
		if d, err := parseDur(string(m[1])); err == nil {
			r.Mean = d
		}
	}
	if m := wrkSockRE.FindSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(string(s), 10, 64)
			r.Errors += n
		}
	}
	if m := wrkNon2xxRE.FindSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.Errors += n
	}
	return r, nil
}

// parseH2load reads h2load's summary. Its latency line has min, max, mean and sd only;
// the percentiles come from the per-request log (see percentilesFromLog).
func parseH2load(out []byte) (toolRun, error) {
	r := toolRun{P50: -1, P99: -1, Mean: -1, LatNote: "h2load summary has no percentiles"}
	m := h2FinishedRE.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no \"finished in\" line in:\n%s", out)
	}
	el, err := parseDur(string(m[1]))
	if err != nil {
		return r, fmt.Errorf("h2load: %w", err)
	}
	r.Elapsed = el
	r.RPS, _ = strconv.ParseFloat(string(m[2]), 64)
	m = h2ReqRE.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no \"requests:\" line in:\n%s", out)
	}
	r.Requests, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, s := range m[2:] {
		n, _ := strconv.ParseInt(string(s), 10, 64)
		r.Errors += n
	}
	if m := h2TimeRE.FindSubmatch(out); m != nil {
		if d, err := parseDur(string(m[3])); err == nil {
			r.Mean = d
		}
	}
	return r, nil
}

// percentilesFromLog reads h2load's --log-file (tab-separated: start time µs since the
// epoch, status code, µs until the end of the response) and returns p50 and p99 of the
// response times (nearest rank), and the count of lines read.
func percentilesFromLog(path string) (p50, p99 time.Duration, n int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	var us []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) < 3 || strings.HasPrefix(fs[1], "-") { // status -1: a failed stream
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(fs[2]), 64)
		if err != nil {
			continue
		}
		us = append(us, v)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if len(us) == 0 {
		return 0, 0, 0, fmt.Errorf("h2load log %s: no request lines", path)
	}
	slices.Sort(us)
	rank := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(us)))) - 1
		i = min(max(i, 0), len(us)-1)
		return time.Duration(us[i] * float64(time.Microsecond))
	}
	return rank(0.50), rank(0.99), len(us), nil
}
