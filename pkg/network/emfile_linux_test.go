package network

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

// TestAcceptBacksOffOnEMFILE runs a listener in a child process whose descriptor limit
// leaves room for two connections, opens twelve at once from here, and checks that all are
// served and that accept errors were counted; with goroutines and on event loops.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	switch os.Getenv(childEnv) {
	case "emfile":
		emfileChild(t, false)
		return
	case "emfile-loops":
		emfileChild(t, true)
		return
	}
	t.Run("goroutines", func(t *testing.T) { testEMFILE(t, "emfile", "pong\n") })
	t.Run("loops", func(t *testing.T) {
		if !evloop.Supported {
			t.Skip("no event loops here")
		}
		testEMFILE(t, "emfile-loops", "ping\n") // the loop handler echoes
	})
}

func testEMFILE(t *testing.T, mode, want string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestAcceptBacksOffOnEMFILE$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	r := bufio.NewReader(stdout)
	addr, err := readTagged(r, "addr=")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			defer c.Close()
			if got, err := roundTrip(c, "ping\n", 10*time.Second); err != nil || got != want {
				t.Errorf("conn %d: %q, %v", i, got, err)
			}
		})
	}
	wg.Wait()
	stdin.Close()
	n, err := readTagged(r, "accept_errors=")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if n == "0" {
		t.Errorf("accept_errors = 0; want EMFILE counted")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child failed: %v\n%s", err, stderr.String())
	}
	t.Logf("accept errors counted under EMFILE: %s", n)
}

func readTagged(r *bufio.Reader, tag string) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, tag) {
			return strings.TrimSpace(strings.TrimPrefix(line, tag)), nil
		}
		if err != nil {
			return "", fmt.Errorf("no %q line: %w", tag, err)
		}
	}
}

func emfileChild(t *testing.T, loops bool) {
	cfg := testConfig(t, "emfile", nil)
	if loops {
		lcfg, _ := loopConfig(t, "emfile", 1)
		cfg.RawHandler, cfg.Loops = lcfg.RawHandler, lcfg.Loops
	}
	cfg.Log = zap.NewNop()
	pool := cfg.Conn.Pool
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		// Answer, then hold the descriptor until the client closes.
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			if strings.Contains(string(b.Bytes()), "\n") {
				b.Drain(b.Len())
				out := pool.NewBuffer(0)
				out.WriteString("pong\n")
				return c.Write(out)
			}
			return nil
		})
	})
	l := serve(t, cfg)
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd") // includes the descriptor used to read it
	if err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(fds)) + 1, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("addr=%s\n", l.Addr())
	io.Copy(io.Discard, os.Stdin)
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
	fmt.Printf("accept_errors=%v\n", value(cfg.Metrics.AcceptErrors.WithLabelValues("emfile")))
}
