package accesslog

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type reqView map[string]string

func (r reqView) Header(name string) (string, bool) {
	v, ok := r["h:"+strings.ToLower(name)]
	return v, ok
}

func (r reqView) Variable(name string) (string, bool) {
	v, ok := r["v:"+name]
	return v, ok
}

type respView map[string]string

func (r respView) Get(name string) (string, bool) {
	v, ok := r[strings.ToLower(name)]
	return v, ok
}

func TestValidate(t *testing.T) {
	if err := Validate(""); err != nil {
		t.Fatalf("default format: %v", err)
	}
	if err := Validate(DefaultFormat + " %request_header_x-id% %response_header_server% %x-mosn-path% 100%%"); err != nil {
		t.Fatal(err)
	}
	err := Validate("%start_time% %no_such_var%")
	if err == nil || !strings.Contains(err.Error(), "%no_such_var%") || !strings.Contains(err.Error(), "upstream_host") {
		t.Fatalf("unknown variable: %v", err)
	}
	if err := Validate("%start_time"); err == nil {
		t.Fatal("unterminated variable accepted")
	}
}

func render(t *testing.T, fs string, i *Info, r RequestView, h HeaderGetter) string {
	t.Helper()
	k := &keys{}
	f, err := compile(fs, k)
	if err != nil {
		t.Fatal(err)
	}
	l := &Logs{keys: *k, formats: []*format{f}}
	l.CaptureRequest(i, r)
	l.CaptureResponse(i, h)
	return string(f.render(nil, i))
}

func TestRender(t *testing.T) {
	i := &Info{
		Start:            time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.Local),
		RequestReceived:  1500 * time.Microsecond,
		ResponseReceived: 2 * time.Millisecond,
		Finished:         time.Minute + 1500*time.Millisecond,
		BytesReceived:    10,
		BytesSent:        20,
		Protocol:         "Http1",
		ResponseCode:     503,
		Flags:            FlagNoHealthyHost | FlagFaultDelay,
		DownstreamLocal:  netip.MustParseAddrPort("127.0.0.1:80"),
		DownstreamRemote: netip.MustParseAddrPort("127.0.0.2:5000"),
		UpstreamCluster:  "c1",
	}
	got := render(t, `[%start_time%] %request_received_duration% %response_received_duration% %duration% `+
		`%bytes_received% %bytes_sent% %protocol% %response_code% %response_flag% %downstream_local_address% `+
		`%downstream_remote_address% %upstream_local_address% %upstream_host% %upstream_cluster% `+
		`"%request_header_user-agent%" %request_header_x-missing% %x-mosn-path% %response_header_server% 100%%`,
		i, reqView{"h:user-agent": "evil\n\"agent\"", "v:x-mosn-path": "/a"}, respView{"server": "origin"})
	want := `[2026/01/02 03:04:05.006] 1.5ms 2ms 1m1.5s 10 20 Http1 503 UH,DI 127.0.0.1:80 127.0.0.2:5000 - - c1 ` +
		`"evil\x0a\x22agent\x22" - /a origin 100%`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestAppendDuration(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 999, time.Microsecond, 1234567, time.Second, 90 * time.Second,
		3*time.Hour + 25*time.Millisecond, -1500 * time.Millisecond, 100 * time.Millisecond} {
		if got := string(AppendDuration(nil, d)); got != d.String() {
			t.Errorf("AppendDuration(%d) = %q, want %q", int64(d), got, d.String())
		}
	}
}

func TestInfoNoAllocs(t *testing.T) {
	k := &keys{}
	f, err := compile(DefaultFormat+" %request_header_host% %response_header_server%", k)
	if err != nil {
		t.Fatal(err)
	}
	l := &Logs{keys: *k, formats: []*format{f}}
	i := &Info{}
	r := reqView{"h:host": "example"}
	h := respView{"server": "x"}
	allocs := testing.AllocsPerRun(100, func() {
		i.Reset()
		i.Start = time.Now()
		i.Finished = time.Millisecond
		l.CaptureRequest(i, r)
		l.CaptureResponse(i, h)
		i.line = f.render(i.line[:0], i)
	})
	if allocs != 0 {
		t.Fatalf("allocs per request = %v", allocs)
	}
}

func TestWriterFileAndDrops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "access.log")
	l, err := New([]Spec{{Path: path, Format: "%protocol% %response_code%"}}, Options{ShardBytes: 64, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	i := &Info{Protocol: "Http1", ResponseCode: 200}
	w := l.writers[0]
	// 11 bytes a line, 64 per shard: 5 fit in shard 0. The writer, woken once the shard is
	// filling, may drain it meanwhile on another CPU, so log until a line is dropped (a
	// write to the file takes far longer than a Log).
	logged := 0
	for ; logged < 20 || w.Dropped() == 0 && logged < 100000; logged++ {
		l.Log(i, 0)
	}
	if w.Dropped() == 0 {
		t.Fatalf("no line dropped from a full shard in %d lines", logged)
	}
	w.Flush()
	l.Log(i, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 6 || lines[0] != "Http1 200" {
		t.Fatalf("file has %d lines: %q", len(lines), b)
	}
	if uint64(len(lines))+w.Dropped() != uint64(logged+1) {
		t.Fatalf("written %d + dropped %d != %d logged", len(lines), w.Dropped(), logged+1)
	}
}

// sharedLogs returns two Logs writing to one file, and its path.
func sharedLogs(t *testing.T) (a, b *Logs, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "a.log")
	var err error
	if a, err = New([]Spec{{Path: path}}, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err = New([]Spec{{Path: path}}, Options{}); err != nil {
		t.Fatal(err)
	}
	return a, b, path
}

func TestWriterShared(t *testing.T) {
	a, b, path := sharedLogs(t)
	if a.writers[0] != b.writers[0] {
		t.Fatal("two Logs on one path got two writers")
	}
	_ = a.Close()
	b.Log(&Info{}, 1) // still open
	_ = b.Close()
	if data, _ := os.ReadFile(path); len(data) == 0 {
		t.Fatal("nothing written")
	}
	if _, err := New([]Spec{{Path: path, Format: "%bogus%"}}, Options{}); err == nil || !strings.Contains(err.Error(), "access_logs[0].log_format") {
		t.Fatalf("bad format: %v", err)
	}
}

// TestCloseWhileLogging: sessions that outlive the listener's drain keep using its Logs
// while the server closes it; under -race this must be clean, and the Logs then reads as
// disabled. A second Close does not drop another user's reference to a shared writer.
func TestCloseWhileLogging(t *testing.T) {
	a, b, path := sharedLogs(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		i := &Info{Protocol: "Http1", ResponseCode: 200}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if a.Enabled() {
				a.Log(i, 1)
			}
		}
	}()
	time.Sleep(5 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if a.Enabled() {
		t.Fatal("a closed Logs reads as enabled")
	}
	_ = a.Close() // again: must not release b's reference
	b.Log(&Info{Protocol: "after"}, 2)
	b.Flush()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "after") {
		t.Fatal("the shared writer was closed under its other user")
	}
}
