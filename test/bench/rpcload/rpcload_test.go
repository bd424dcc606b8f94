package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/test/bench/benchproc"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunDirect drives each protocol's load against its upstream directly: every request
// answered, latencies recorded, the request budget respected.
func TestRunDirect(t *testing.T) {
	bs, err := rpcpeer.StartBoltServer(rpcpeer.BoltServerOptions{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ds, err := rpcpeer.StartDubboServer(rpcpeer.DubboServerOptions{Name: "t", Fast: true, FastValue: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	hs, err := startHTTPUpstream(1024)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for proto, addr := range map[string]string{protoBolt: bs.Addr(), protoDubbo: ds.Addr(), protoHTTP1: hs.Addr()} {
		s := shape{proto: proto, addr: addr, concurrency: 16, conns: 2, payload: 1024, requests: 3000, duration: 20 * time.Second}
		w, err := run(ctx, s, func() (time.Duration, error) { return benchproc.TotalCPU(os.Getpid()) })
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if w.Requests != 3000 || w.Errors != 0 || w.quantile(0.99) <= 0 || w.ProxyCPU < 0 {
			t.Fatalf("%s: %d requests, %d errors (%s), p99 %s, cpu %s", proto, w.Requests, w.Errors, w.FirstErr,
				w.quantile(0.99), w.ProxyCPU)
		}
	}
	if bs.Requests.Load() != 3000 || ds.Requests.Load() != 3000 {
		t.Fatalf("servers saw %d bolt, %d dubbo requests", bs.Requests.Load(), ds.Requests.Load())
	}
}

func TestUpdateDoc(t *testing.T) {
	p := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(p, []byte("# T\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"first\n", "second\n"} {
		if err := updateDoc(p, s); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	if got := string(b); strings.Count(got, docBegin) != 1 || !strings.Contains(got, "second") || strings.Contains(got, "first") {
		t.Fatalf("doc:\n%s", got)
	}
}
