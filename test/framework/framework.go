// Package framework starts the real mosnlite binary on loopback for end-to-end tests, with
// free ports picked at run time, and provides small real upstreams (TCP, UDP) that run in
// the test process. Nothing under pkg/ imports it; the loopback helpers it shares with the
// unit tests (StartTCP, EchoServer) live in pkg/testutil.
package framework

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	binDir    string // the temporary directory Binary built into; "" when prebuilt
	buildErr  error
)

// raceExitSleep is the race runtime's atexit_sleep_ms given to the processes the tests
// start, unless GORACE sets it. Its default, 1000, made every proxy's exit and every CLI
// run take a second more. The runtime still waits for a report in progress before it
// exits; races are found in the output (raceReport).
const raceExitSleep = "atexit_sleep_ms=20"

// childEnv is the environment of a process started from Binary.
func childEnv() []string {
	env := os.Environ()
	if !raceEnabled {
		return env
	}
	g := os.Getenv("GORACE")
	if strings.Contains(g, "atexit_sleep_ms") {
		return env
	}
	return append(env, "GORACE="+strings.TrimSpace(g+" "+raceExitSleep))
}

// raceReport returns the first data race report in out, or "".
func raceReport(out string) string {
	i := strings.Index(out, "WARNING: DATA RACE")
	if i < 0 {
		return ""
	}
	r := out[i:]
	if j := strings.Index(r, "\n==================\n"); j >= 0 {
		r = r[:j]
	}
	return r
}

// RemoveBinary removes what Binary built. Call it from TestMain once the tests are done.
func RemoveBinary() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// Binary builds cmd/mosnlite once per test process (with -race when the tests run with it)
// and returns its path. MOSNLITE_BIN overrides it with a prebuilt binary.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("MOSNLITE_BIN"); p != "" {
			binPath = p
			return
		}
		dir, err := os.MkdirTemp("", "mosnlite-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "mosnlite")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/mosnlite/mosnlite/cmd/mosnlite")
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// RepoPath returns a path inside the repository.
func RepoPath(parts ...string) string {
	return filepath.Join(append([]string{repoRoot()}, parts...)...)
}

// FreePort returns a loopback port that was free a moment ago ("127.0.0.1:N") and that no
// earlier call in this test binary returned.
func FreePort(t testing.TB) string { t.Helper(); return testutil.FreeAddr(t) }

// FreeUDPPort is FreePort for UDP.
func FreeUDPPort(t testing.TB) string { t.Helper(); return testutil.FreeUDPAddr(t) }

// Proxy is a running mosnlite process.
type Proxy struct {
	t       testing.TB
	cmd     *exec.Cmd
	logs    *testutil.Buffer
	exited  chan struct{}
	exitErr error
	Config  string // path of the config file
}

// RunCLI runs the binary to completion with args and returns its exit code and output.
func RunCLI(t testing.TB, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if r := raceReport(string(out)); r != "" {
		t.Errorf("mosnlite %v reported a data race:\n%s", args, r)
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("run %v: %v", args, err)
	}
	return 0, string(out)
}

// StartProxy writes cfg to a temp file, starts `mosnlite start -c` on it and waits until it
// logs that it serves. The process is stopped (SIGTERM, then SIGKILL) at cleanup.
func StartProxy(t testing.TB, cfg string, extraArgs ...string) *Proxy {
	t.Helper()
	return startProxy(t, cfg, nil, extraArgs)
}

// StartProxyGoroutines is StartProxy with the event loops off (MOSNLITE_EVENT_LOOPS=off):
// every listener serves a goroutine per connection, as on a platform without loops.
// Unlike t.Setenv, it leaves the test free to run in parallel.
func StartProxyGoroutines(t testing.TB, cfg string, extraArgs ...string) *Proxy {
	t.Helper()
	return startProxy(t, cfg, []string{"MOSNLITE_EVENT_LOOPS=off"}, extraArgs)
}

func startProxy(t testing.TB, cfg string, env, extraArgs []string) *Proxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--log-format", "json"}, extraArgs...)
	args = append(args, "start", "-c", path)
	p := &Proxy{t: t, logs: &testutil.Buffer{}, exited: make(chan struct{}), Config: path}
	p.cmd = exec.Command(Binary(t), args...)
	p.cmd.Env = append(childEnv(), env...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if r := raceReport(p.Logs()); r != "" {
			t.Errorf("mosnlite reported a data race:\n%s", r)
		}
		if t.Failed() {
			t.Logf("mosnlite output:\n%s", p.Logs())
		}
	})
	if !p.WaitLog("mosnlite serving", 30*time.Second) {
		t.Fatalf("mosnlite did not start:\n%s", p.Logs())
	}
	return p
}

// WaitLog waits until the process output contains s, or the process exits, or d passes.
func (p *Proxy) WaitLog(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.logs.String(), s) {
			return true
		}
		select {
		case <-p.exited:
			return strings.Contains(p.logs.String(), s)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// Logs returns everything the process printed so far.
func (p *Proxy) Logs() string { return p.logs.String() }

// Signal sends sig to the process.
func (p *Proxy) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Pid is the process id.
func (p *Proxy) Pid() int { return p.cmd.Process.Pid }

// Wait waits up to d for the process to exit and returns its exit code (-1: still running).
func (p *Proxy) Wait(d time.Duration) int {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// Stop sends SIGTERM, waits up to d, then kills.
func (p *Proxy) Stop(d time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if p.Wait(d) == -1 {
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Dial connects to addr with a bounded timeout.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// ReadLine reads one '\n'-terminated line.
func ReadLine(c net.Conn) (string, error) {
	r := bufio.NewReader(c)
	s, err := r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}
