package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const wrkOut = `Running 10s test @ http://127.0.0.1:41000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.53ms    1.02ms  31.20ms   90.12%
    Req/Sec    25.90k     1.11k   27.60k    71.00%
  Latency Distribution
     50%    2.31ms
     75%    2.70ms
     90%    3.40ms
     99%  850.00us
  257734 requests in 10.00s, 286.84MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  25771.46
Transfer/sec:     28.68MB
`

const h2Out = `starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 10s of main duration for measurements.
Application protocol: h2c
finished in 10.00s, 18960.10 req/s, 20.60MB/s
requests: 189601 total, 189665 started, 189601 done, 189590 succeeded, 11 failed, 0 errored, 0 timeout
status codes: 189590 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 205.99MB (215994417) total, 1.09MB (1137606) headers (space savings 93.48%), 192.12MB (201455580) data
                     min         max         mean         sd        +/- sd
time for request:      320us     12.45ms      3.35ms       611us    72.41%
time for connect:      156us       310us       230us        55us    62.50%
time to 1st byte:     1.20ms      1.42ms      1.31ms        80us    62.50%
req/s           :    2365.02     2374.41     2370.01        3.44    62.50%
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk([]byte(wrkOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 257734 || r.Elapsed != 10*time.Second || r.RPS != 25771.46 {
		t.Errorf("requests %v elapsed %v rps %v", r.Requests, r.Elapsed, r.RPS)
	}
	if r.P50 != 2310*time.Microsecond || r.P99 != 850*time.Microsecond || r.Mean != 2530*time.Microsecond {
		t.Errorf("p50 %v p99 %v mean %v", r.P50, r.P99, r.Mean)
	}
	if r.Errors != 7 {
		t.Errorf("errors %d, want 3 socket + 4 non-2xx", r.Errors)
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("parseWrk accepted output without a request count")
	}
}

func TestParseH2load(t *testing.T) {
	r, err := parseH2load([]byte(h2Out))
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 189590 || r.RPS != 18960.10 || r.Elapsed != 10*time.Second || r.Errors != 11 {
		t.Errorf("requests %v rps %v elapsed %v errors %d", r.Requests, r.RPS, r.Elapsed, r.Errors)
	}
	if r.Mean != 3350*time.Microsecond || r.P50 != -1 {
		t.Errorf("mean %v p50 %v", r.Mean, r.P50)
	}
}

func TestPercentilesFromLog(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= 200; i++ {
		b.WriteString("1700000000000000\t200\t" + strconv.Itoa(i) + "\n")
	}
	b.WriteString("1700000000000000\t-1\t999999\n") // a failed stream: left out
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p50, p99, n, err := percentilesFromLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if n != 200 || p50 != 100*time.Microsecond || p99 != 198*time.Microsecond {
		t.Errorf("n %d p50 %v p99 %v", n, p50, p99)
	}
}

func TestSpliceDoc(t *testing.T) {
	doc := "# B\n\n" + docBegin + "\nold\n" + docEnd + "\n\ntail\n"
	got := spliceDoc(doc, "new\n")
	if want := "# B\n\n" + docBegin + "\nnew\n" + docEnd + "\n\ntail\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := spliceDoc("# B", "x"); got != "# B\n\n"+docBegin+"\nx\n"+docEnd+"\n" {
		t.Errorf("append: %q", got)
	}
}

func TestConfigs(t *testing.T) {
	up := upstreamConf("/d", "", "127.0.0.1:1", "127.0.0.1:2", 16)
	for _, want := range []string{"listen 127.0.0.1:2 http2;", `return 200 "xxxxxxxxxxxxxxxx";`, "access_log off;"} {
		if !strings.Contains(up, want) {
			t.Errorf("upstream config lacks %q:\n%s", want, up)
		}
	}
	px := proxyConf("/d", "", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:1")
	for _, want := range []string{"keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "listen 127.0.0.1:4 http2;"} {
		if !strings.Contains(px, want) {
			t.Errorf("proxy config lacks %q:\n%s", want, px)
		}
	}
	if _, err := mosnliteConf("127.0.0.1:5", "127.0.0.1:6", "127.0.0.1:1", "Http2"); err != nil {
		t.Fatal(err)
	}
}
