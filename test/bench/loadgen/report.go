package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

const mib = 1 << 20

// noisyOther is the share of a CPU used by others during a window above which the report
// warns that the run was not alone on the machine.
const noisyOther = 0.15

// result is one target's measurements over all rounds.
type result struct {
	Target  string
	Version string
	Bulk    []window
	Conn    []window
	Err     error // the target could not be measured
}

// metrics are the figures one target reports (medians over rounds). NaN: not applicable.
type metrics struct {
	MiBps, CPUPerMiB   float64 // MiB/s; proxy CPU µs per MiB
	ConnPS, CPUPerConn float64 // connections/s; proxy CPU µs per connection
	ProxyBusyBulk      float64 // proxy CPU / wall, bulk window (1.0 = one core)
	ProxyBusyConn      float64
	LoadBusyBulk       float64 // load tool + upstream CPU / wall
	LoadBusyConn       float64
	OtherBusy          float64 // the most any window saw: other processes' share of the machine
	Errors             int64
	FirstErr           string
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

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (r result) metrics() metrics {
	var m metrics
	col := func(ws []window, f func(w window) float64) float64 {
		xs := make([]float64, len(ws))
		for i, w := range ws {
			xs[i] = f(w)
		}
		return median(xs)
	}
	perSec := func(w window) float64 {
		if w.Elapsed <= 0 {
			return math.NaN()
		}
		return w.Count / w.Elapsed.Seconds()
	}
	cpuPerCol := func(unit float64) func(w window) float64 {
		return func(w window) float64 { return cpuPer(w, unit) }
	}
	busy := func(w window, d time.Duration) float64 {
		if d < 0 || w.Elapsed <= 0 {
			return math.NaN()
		}
		return float64(d) / float64(w.Elapsed)
	}
	m.MiBps = col(r.Bulk, func(w window) float64 { return perSec(w) / mib })
	m.CPUPerMiB = col(r.Bulk, cpuPerCol(mib))
	m.ConnPS = col(r.Conn, perSec)
	m.CPUPerConn = col(r.Conn, cpuPerCol(1))
	m.ProxyBusyBulk = col(r.Bulk, func(w window) float64 { return busy(w, w.ProxyCPU) })
	m.ProxyBusyConn = col(r.Conn, func(w window) float64 { return busy(w, w.ProxyCPU) })
	m.LoadBusyBulk = col(r.Bulk, func(w window) float64 { return busy(w, w.LoadCPU) })
	m.LoadBusyConn = col(r.Conn, func(w window) float64 { return busy(w, w.LoadCPU) })
	for _, w := range append(slices.Clone(r.Bulk), r.Conn...) {
		// Tick sampling can make the difference slightly negative; that is "none".
		m.OtherBusy = max(m.OtherBusy, busy(w, max(w.OtherCPU, 0)))
		m.Errors += w.Errors
		if m.FirstErr == "" {
			m.FirstErr = w.ErrText
		}
	}
	return m
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

// table renders the results and their ratios as markdown.
func table(rs []result) string {
	var b strings.Builder
	b.WriteString("| target | bulk MiB/s | proxy CPU µs/MiB | conns/s | proxy CPU µs/conn | proxy CPU busy (bulk / conns) | load CPU busy (bulk / conns) | other CPU (max) | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ms := map[string]metrics{}
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(&b, "| %s | not measured: %s | | | | | | | |\n", r.Target, oneLine(r.Err.Error()))
			continue
		}
		m := r.metrics()
		ms[r.Target] = m
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %d |\n", r.Target,
			num(m.MiBps, 0), num(m.CPUPerMiB, 0), num(m.ConnPS, 0), num(m.CPUPerConn, 1),
			pct(m.ProxyBusyBulk), pct(m.ProxyBusyConn), pct(m.LoadBusyBulk), pct(m.LoadBusyConn), pct(m.OtherBusy), m.Errors)
	}
	type pair struct{ a, b string }
	var pairs []pair
	for _, p := range []pair{{"mosnlite", "nginx"}, {"mosnlite", "nginx-halfclose"}, {"mosnlite", "direct"}, {"nginx", "direct"}} {
		_, okA := ms[p.a]
		_, okB := ms[p.b]
		if okA && okB {
			pairs = append(pairs, p)
		}
	}
	if len(pairs) > 0 {
		b.WriteString("\n| ratio | bulk MiB/s | proxy CPU µs/MiB | conns/s | proxy CPU µs/conn |\n|---|---:|---:|---:|---:|\n")
		for _, p := range pairs {
			a, c := ms[p.a], ms[p.b]
			fmt.Fprintf(&b, "| %s / %s | %s | %s | %s | %s |\n", p.a, p.b,
				ratio(a.MiBps, c.MiBps), ratio(a.CPUPerMiB, c.CPUPerMiB), ratio(a.ConnPS, c.ConnPS), ratio(a.CPUPerConn, c.CPUPerConn))
		}
	}
	if m, ok := ms["mosnlite"]; ok {
		for _, ng := range []string{"nginx", "nginx-halfclose"} {
			if n, ok := ms[ng]; ok {
				fmt.Fprintf(&b, "\nTarget mosnlite ≤ %s in proxy CPU: per MiB %s, per connection %s.\n",
					ng, verdict(m.CPUPerMiB, n.CPUPerMiB), verdict(m.CPUPerConn, n.CPUPerConn))
			}
		}
		b.WriteString(roundRatios(rs))
	}
	worst := 0.0
	for _, m := range ms {
		worst = max(worst, m.OtherBusy)
	}
	if worst > noisyOther {
		fmt.Fprintf(&b, "\n**Warning:** other processes kept up to %s of a CPU busy during a window: the machine was shared, so these figures are unreliable. Rerun on an idle machine.\n", pct(worst))
	}
	for _, r := range rs {
		if r.Err == nil {
			if m := ms[r.Target]; m.Errors > 0 {
				fmt.Fprintf(&b, "\n%s: %d errors; first: %s\n", r.Target, m.Errors, oneLine(m.FirstErr))
			}
		}
	}
	return b.String()
}

// roundRatios lists, for mosnlite against each nginx target, the proxy CPU ratios of
// each round's windows, which ran close together in time: the spread between rounds
// shows how much of a difference between two targets is the machine's drift.
// medianInterval is a distribution-free confidence interval for the median of the
// population xs were drawn from: the k-th smallest and k-th largest of them, with k the
// largest for which the interval still covers the median with probability conf >= 90 %
// (a sign-test interval: each draw falls below the median with probability 1/2). Paired
// rounds need no assumption about the shape of their noise. ok is false under 5 values,
// too few for 90 %.
func medianInterval(xs []float64) (lo, hi, conf float64, ok bool) {
	n := len(xs)
	if n < 5 {
		return 0, 0, 0, false
	}
	v := slices.Clone(xs)
	slices.Sort(v)
	// cover(k) = 1 - 2 P(Binomial(n, 1/2) <= k-1).
	cover := func(k int) float64 {
		tail, c := 0.0, 1.0 // c = C(n, i)
		for i := range k {
			tail += c
			c = c * float64(n-i) / float64(i+1)
		}
		return 1 - 2*tail/math.Pow(2, float64(n))
	}
	k := 1
	for k+1 <= n/2 && cover(k+1) >= 0.90 {
		k++
	}
	return v[k-1], v[n-k], cover(k), true
}

func roundRatios(rs []result) string {
	find := func(t string) *result {
		for i := range rs {
			if rs[i].Target == t && rs[i].Err == nil {
				return &rs[i]
			}
		}
		return nil
	}
	m := find("mosnlite")
	if m == nil {
		return ""
	}
	var b strings.Builder
	for _, ng := range []string{"nginx", "nginx-halfclose"} {
		n := find(ng)
		if n == nil || min(len(m.Conn), len(n.Conn)) < 2 {
			continue
		}
		list := func(a, c []window, unit float64) string {
			var xs []float64
			var parts []string
			for i := range min(len(a), len(c)) {
				x, y := cpuPer(a[i], unit), cpuPer(c[i], unit)
				if math.IsNaN(x) || math.IsNaN(y) || y == 0 {
					continue
				}
				xs = append(xs, x/y)
				parts = append(parts, fmt.Sprintf("%.2f", x/y))
			}
			if len(xs) == 0 {
				return "—"
			}
			out := fmt.Sprintf("%s (median %.2f", strings.Join(parts, ", "), median(xs))
			if lo, hi, conf, ok := medianInterval(xs); ok {
				out += fmt.Sprintf("; %.0f %% interval for the median %.2f–%.2f", 100*conf, lo, hi)
			}
			return out + ")"
		}
		fmt.Fprintf(&b, "\nPer-round proxy CPU ratios, mosnlite / %s: per connection %s; per MiB %s.\n",
			ng, list(m.Conn, n.Conn, 1), list(m.Bulk, n.Bulk, mib))
	}
	return b.String()
}

// cpuPer is the proxy's CPU µs per unit (1: per connection, mib: per MiB) in w; NaN
// when w has no proxy or counted nothing.
func cpuPer(w window, unit float64) float64 {
	if w.ProxyCPU < 0 || w.Count == 0 {
		return math.NaN()
	}
	return micros(w.ProxyCPU) / (w.Count / unit)
}

func verdict(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) {
		return "unknown"
	}
	if a <= b {
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

// Markers delimit the part of docs/benchmarks.md that the harness rewrites.
const (
	docBegin = "<!-- loadgen:begin (written by test/bench/loadgen; edits inside are overwritten) -->"
	docEnd   = "<!-- loadgen:end -->"
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

func updateDoc(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(spliceDoc(string(old), section)), 0o644)
}
