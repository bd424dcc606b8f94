package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// medians of one result's windows.
type summary struct {
	rate, p50, p99, cpu, busy, other float64 // p50/p99 in µs; cpu µs/req (-1: none); busy, other: fractions
	requests, errors                 int64
	firstErr                         string
}

func summarize(r *result) summary {
	var rate, p50, p99, cpu, busy []float64
	s := summary{}
	for _, w := range r.Windows {
		rate = append(rate, w.rate())
		p50 = append(p50, float64(w.quantile(0.5))/float64(time.Microsecond))
		p99 = append(p99, float64(w.quantile(0.99))/float64(time.Microsecond))
		if c := w.cpuPerReq(); c >= 0 {
			cpu = append(cpu, c)
			busy = append(busy, w.ProxyCPU.Seconds()/w.Elapsed.Seconds())
		}
		s.requests += w.Requests
		s.errors += w.Errors
		if s.firstErr == "" {
			s.firstErr = w.FirstErr
		}
	}
	s.rate, s.p50, s.p99, s.cpu, s.busy = median(rate), median(p50), median(p99), median(cpu), median(busy)
	s.other = -1
	if len(r.Other) > 0 {
		s.other = slices.Max(r.Other)
	}
	return s
}

func table(rs []*result) string {
	var b strings.Builder
	b.WriteString("| protocol | target | req/s | p50 µs | p99 µs | proxy CPU µs/req | proxy CPU busy | other CPU (max) | errors |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var errs []string
	for _, r := range rs {
		if r.Err != nil || len(r.Windows) == 0 {
			msg := "no window"
			if r.Err != nil {
				msg = r.Err.Error()
			}
			fmt.Fprintf(&b, "| %s | %s | — | — | — | — | — | — | failed |\n", r.Proto, r.Target)
			errs = append(errs, fmt.Sprintf("%s %s: %s", r.Proto, r.Target, firstLine(msg)))
			continue
		}
		s := summarize(r)
		cpu, busy := "—", "—"
		if s.cpu >= 0 {
			cpu, busy = fmt.Sprintf("%.1f", s.cpu), fmt.Sprintf("%.0f%%", 100*s.busy)
		}
		other := "—"
		if s.other >= 0 {
			other = fmt.Sprintf("%.0f%%", 100*s.other)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %.0f | %s | %s | %s | %d |\n", r.Proto, r.Target, s.rate, s.p50, s.p99,
			cpu, busy, other, s.errors)
		if s.firstErr != "" {
			errs = append(errs, fmt.Sprintf("%s %s: %s", r.Proto, r.Target, firstLine(s.firstErr)))
		}
	}
	for _, e := range errs {
		fmt.Fprintf(&b, "\nError: %s\n", e)
	}
	return b.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func report(f benchFlags, m benchproc.Machine, rs []*result, version string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### RPC load run, %s\n\n", now.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- command: `%s`\n", f.command)
	fmt.Fprintf(&b, "- machine: %d CPUs (`nproc`), %s; kernel %s; %s\n", m.CPUs, m.Model, m.Kernel, runtime.Version())
	if version != "" {
		fmt.Fprintf(&b, "- mosnlite: %s\n", version)
	}
	pin := "not pinned"
	if f.pin {
		pin = fmt.Sprintf("mosnlite pinned alone on CPU %s, load client + upstreams on CPU %s", f.proxyCPU, f.loadCPU)
	}
	fmt.Fprintf(&b, "- load: %d requests per window (time bound %s) after %d warm-up requests, %d round(s) (medians); "+
		"%d in flight (bolt/dubbo: on %d connection(s); HTTP/1.1: %d keep-alive connections), %d-byte request and response payload; %s\n",
		f.load.requests, f.load.duration, f.load.warmup, f.rounds, f.load.concurrency, f.load.conns, f.load.concurrency,
		f.load.payload, pin)
	if f.note != "" {
		fmt.Fprintf(&b, "- note: %s\n", f.note)
	}
	b.WriteString("\n")
	b.WriteString(table(rs))
	// Target: proxy CPU per bolt/dubbo request at most mosnlite's own per HTTP/1.1 request.
	cpuOf := map[string]float64{}
	for _, r := range rs {
		if r.Target == "mosnlite" && r.Err == nil && len(r.Windows) > 0 {
			cpuOf[r.Proto] = summarize(r).cpu
		}
	}
	if h, ok := cpuOf[protoHTTP1]; ok && h > 0 {
		b.WriteString("\n")
		for _, p := range []string{protoBolt, protoDubbo} {
			if c, ok := cpuOf[p]; ok && c >= 0 {
				verdict := "met"
				if c > h {
					verdict = "not met"
				}
				fmt.Fprintf(&b, "- %s / HTTP/1.1 proxy CPU per request: %.2f (target ≤ 1.00: %s)\n", p, c/h, verdict)
			}
		}
	}
	worst := 0.0
	for _, r := range rs {
		for _, o := range r.Other {
			worst = max(worst, o)
		}
	}
	if worst > 0.15 {
		fmt.Fprintf(&b, "\n**Warning:** other processes kept up to %.0f%% of a CPU busy during a window: the machine was shared, so these figures are unreliable.\n", 100*worst)
	}
	return b.String()
}

const (
	docBegin = "<!-- rpcload:begin (written by test/bench/rpcload; edits inside are overwritten) -->"
	docEnd   = "<!-- rpcload:end -->"
)

// updateDoc replaces the text between the rpcload markers of path with section, or appends
// the markers and the section when the file has none.
func updateDoc(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	block := docBegin + "\n" + strings.TrimRight(section, "\n") + "\n" + docEnd
	i, j := strings.Index(s, docBegin), strings.Index(s, docEnd)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(docEnd):]
	case i < 0 && j < 0:
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	default:
		return fmt.Errorf("%s: rpcload markers out of order", path)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
