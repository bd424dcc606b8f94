package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
)

// noisyOther: the share of a CPU other processes used during a window above which the
// report says the machine was not idle.
const noisyOther = 0.15

// stats are one row's figures, medians over its windows. NaN: not applicable.
type stats struct {
	RPS, P50, P99        float64 // req/s; µs
	CPUPerReq, User, Sys float64 // proxy CPU µs per request
	ProxyBusy, LoadBusy  float64 // CPU time / wall (1.0 = one CPU)
	OtherBusy            float64 // worst window: machine busy less proxy, upstream, load tool
	Errors               int64
	LatNote              string
}

func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (r *row) stats() stats {
	col := func(f func(w window) float64) float64 {
		xs := make([]float64, len(r.Windows))
		for i, w := range r.Windows {
			xs[i] = f(w)
		}
		return median(xs)
	}
	lat := func(d time.Duration) float64 {
		if d < 0 {
			return math.NaN()
		}
		return micros(d)
	}
	proxied := r.Target != "direct"
	perReq := func(d time.Duration, n float64) float64 {
		if !proxied || n == 0 {
			return math.NaN()
		}
		return micros(d) / n
	}
	busy := func(d, wall time.Duration) float64 {
		if wall <= 0 {
			return math.NaN()
		}
		return float64(d) / float64(wall)
	}
	s := stats{
		RPS:       col(func(w window) float64 { return w.Run.RPS }),
		P50:       col(func(w window) float64 { return lat(w.Run.P50) }),
		P99:       col(func(w window) float64 { return lat(w.Run.P99) }),
		CPUPerReq: col(func(w window) float64 { return perReq(w.Proxy.Total(), w.Run.Requests) }),
		User:      col(func(w window) float64 { return perReq(w.Proxy.User, w.Run.Requests) }),
		Sys:       col(func(w window) float64 { return perReq(w.Proxy.Sys, w.Run.Requests) }),
		ProxyBusy: col(func(w window) float64 {
			if !proxied {
				return math.NaN()
			}
			return busy(w.Proxy.Total(), w.Wall)
		}),
		LoadBusy: col(func(w window) float64 { return busy(w.Upstream.Total()+w.Run.LoadCPU.Total(), w.Wall) }),
	}
	for _, w := range r.Windows {
		other := w.Busy - w.Proxy.Total() - w.Upstream.Total() - w.Run.LoadCPU.Total()
		s.OtherBusy = max(s.OtherBusy, busy(max(other, 0), w.Wall))
		s.Errors += w.Run.Errors
		if s.LatNote == "" {
			s.LatNote = w.Run.LatNote
		}
	}
	return s
}

func num(x float64, prec int) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// protoTitle and the targets of issue 3: mosnlite's CPU per request at most limit × nginx's.
var protoInfo = map[string]struct {
	title string
	limit float64
}{
	"h1": {"HTTP/1.1", 1.0},
	"h2": {"HTTP/2 (h2c)", 1.5},
}

func loadLine(f flags, proto string) string {
	if proto == "h1" {
		return fmt.Sprintf("`wrk -t1 -c%d -d%ds --latency` (keep-alive GETs)", f.h1Conns, secs(f.duration))
	}
	return fmt.Sprintf("`h2load -c%d -m%d -t1 -D%d --log-file=…` (%d connections × %d concurrent streams, h2c prior knowledge)",
		f.h2Conns, f.h2Streams, secs(f.duration), f.h2Conns, f.h2Streams)
}

// table renders one protocol's rows and the ratios to nginx.
func table(f flags, proto string, rows []*row) string {
	var b strings.Builder
	info := protoInfo[proto]
	fmt.Fprintf(&b, "#### %s\n\nLoad: %s; %d B response bodies.\n\n", info.title, loadLine(f, proto), f.body)
	b.WriteString("| target | req/s | p50 µs | p99 µs | proxy CPU µs/req | user / sys µs/req | proxy CPU busy | load CPU busy | other CPU (max) | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ss := map[string]stats{}
	var note string
	for _, r := range rows {
		if r.Proto != proto {
			continue
		}
		if r.Err != nil || len(r.Windows) == 0 {
			msg := "not measured"
			if r.Err != nil {
				msg = "not measured: " + oneLine(r.Err.Error())
			}
			fmt.Fprintf(&b, "| %s | %s | | | | | | | | |\n", r.Target, msg)
			continue
		}
		s := r.stats()
		ss[r.Target] = s
		if note == "" || r.Target == "direct" {
			note = s.LatNote
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %d |\n", r.Target,
			num(s.RPS, 0), num(s.P50, 0), num(s.P99, 0), num(s.CPUPerReq, 1), num(s.User, 1), num(s.Sys, 1),
			pct(s.ProxyBusy), pct(s.LoadBusy), pct(s.OtherBusy), s.Errors)
	}
	if note != "" {
		fmt.Fprintf(&b, "\nLatency percentiles: %s.\n", note)
	}
	n, okN := ss["nginx"]
	var lines []string
	for _, t := range []string{"mosnlite", "mosnlite GOMAXPROCS=1"} {
		m, ok := ss[t]
		if !ok || !okN {
			continue
		}
		lines = append(lines, fmt.Sprintf("| %s / nginx | %s | %s | %s | %s |", t,
			ratio(m.RPS, n.RPS), ratio(m.P50, n.P50), ratio(m.P99, n.P99), ratio(m.CPUPerReq, n.CPUPerReq)))
	}
	if d, ok := ss["direct"]; ok {
		for _, t := range []string{"nginx", "mosnlite"} {
			if m, ok := ss[t]; ok {
				lines = append(lines, fmt.Sprintf("| %s / direct | %s | %s | %s | — |", t,
					ratio(m.RPS, d.RPS), ratio(m.P50, d.P50), ratio(m.P99, d.P99)))
			}
		}
	}
	if len(lines) > 0 {
		b.WriteString("\n| ratio | req/s | p50 | p99 | proxy CPU µs/req |\n|---|---:|---:|---:|---:|\n")
		b.WriteString(strings.Join(lines, "\n") + "\n")
	}
	if okN {
		for _, t := range []string{"mosnlite", "mosnlite GOMAXPROCS=1"} {
			if m, ok := ss[t]; ok {
				fmt.Fprintf(&b, "\nTarget %s CPU per request ≤ %.1f× nginx: %s (%.2f×).\n", t, info.limit,
					verdict(m.CPUPerReq, info.limit*n.CPUPerReq), m.CPUPerReq/n.CPUPerReq)
			}
		}
	}
	worst := 0.0
	for _, s := range ss {
		worst = max(worst, s.OtherBusy)
	}
	if worst > noisyOther {
		fmt.Fprintf(&b, "\n**Warning:** other processes kept up to %s of a CPU busy during a window: the machine was shared, so these figures are unreliable. Rerun on an idle machine.\n", pct(worst))
	}
	for _, r := range rows {
		if r.Proto == proto && r.Err == nil && len(r.Windows) > 0 {
			if s := ss[r.Target]; s.Errors > 0 {
				fmt.Fprintf(&b, "\n%s: %d errors (socket errors, non-2xx/3xx, failed streams).\n", r.Target, s.Errors)
			}
		}
	}
	return b.String()
}

func verdict(a, limit float64) string {
	if math.IsNaN(a) || math.IsNaN(limit) {
		return "unknown"
	}
	if a <= limit {
		return "met"
	}
	return "not met"
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

// report is the markdown section: when, what, where, how, then one table per protocol.
func report(f flags, m benchproc.Machine, upVersion string, rows []*row, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### HTTP load run, %s\n\n", now.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- command: `%s`\n", f.command)
	fmt.Fprintf(&b, "- machine: %d CPUs (nproc), %s; kernel %s; %s\n", m.CPUs, m.Model, m.Kernel, goVersion())
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Target != "direct" && r.Version != "" && !seen[r.Target] {
			seen[r.Target] = true
			fmt.Fprintf(&b, "- %s: %s\n", r.Target, r.Version)
		}
	}
	fmt.Fprintf(&b, "- upstream: %s (`return 200` of a %d-byte body, access_log off), on the load CPU\n", upVersion, f.body)
	pin := "not pinned"
	if f.pin {
		pin = fmt.Sprintf("proxy pinned alone on CPU %s; load tool, upstream and harness on CPU %s", f.proxyCPU, f.loadCPU)
	}
	fmt.Fprintf(&b, "- %s warm-up, then %s measured per target, %d round(s) (medians); %s\n",
		time.Duration(secs(f.warmup))*time.Second, time.Duration(secs(f.duration))*time.Second, f.rounds, pin)
	if f.note != "" {
		fmt.Fprintf(&b, "- note: %s\n", f.note)
	}
	for _, proto := range strings.Split(f.protocols, ",") {
		b.WriteString("\n")
		b.WriteString(table(f, proto, rows))
	}
	return b.String()
}

// Markers delimit the part of docs/benchmarks.md this harness rewrites.
const (
	docBegin = "<!-- httpload:begin (written by test/bench/httpload; edits inside are overwritten) -->"
	docEnd   = "<!-- httpload:end -->"
)

// spliceDoc replaces the text between the markers with section, or appends the markers and
// section when the document has none.
func spliceDoc(doc, section string) string {
	block := docBegin + "\n" + strings.TrimRight(section, "\n") + "\n" + docEnd
	i := strings.Index(doc, docBegin)
	j := strings.Index(doc, docEnd)
	if i < 0 || j < i {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n" + block + "\n"
	}
	return doc[:i] + block + doc[j+len(docEnd):]
}

// updateDoc re-reads the file just before writing it, so edits by others in the meantime
// outside the markers are kept.
func updateDoc(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(spliceDoc(string(old), section)), 0o644)
}
