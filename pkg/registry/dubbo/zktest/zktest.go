// Package zktest starts a real ZooKeeper server (Debian's zookeeper package) for tests:
// standalone, on a free 127.0.0.1 port, with its own temporary data directory and the admin
// server off. It waits until the server answers "srvr" as serving and stops it (the whole process
// group, bounded) when the test ends.
//
// Without the package the tests fail and say that `make deps` installs it.
package zktest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// Jars Debian's packages install; ZOOKEEPER_CLASSPATH overrides the search.
var (
	serverJars = []string{"/usr/share/java/zookeeper.jar", "/usr/share/zookeeper/zookeeper.jar"}
	extraJars  = []string{ // logging to stderr, when present (else ZooKeeper logs nothing)
		"/usr/share/java/slf4j-simple.jar",
	}
)

// Classpath returns the Java classpath of the installed server, or an error telling how to
// install it.
func Classpath() (string, error) {
	if cp := os.Getenv("ZOOKEEPER_CLASSPATH"); cp != "" {
		return cp, nil
	}
	if _, err := exec.LookPath("java"); err != nil {
		return "", fmt.Errorf("zookeeper: no java on PATH: run `make deps` (it installs Debian's zookeeper package, which brings a JRE)")
	}
	for _, j := range serverJars {
		if _, err := os.Stat(j); err == nil {
			cp := []string{j}
			for _, e := range extraJars {
				if _, err := os.Stat(e); err == nil {
					cp = append(cp, e)
				}
			}
			return strings.Join(cp, ":"), nil
		}
	}
	return "", fmt.Errorf("zookeeper: not installed (none of %s): run `make deps`, which installs Debian's zookeeper package", strings.Join(serverJars, ", "))
}

// Server is a running ZooKeeper.
type Server struct {
	t    testing.TB
	Addr string // "127.0.0.1:port"
	port string
	cp   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *testutil.Buffer
	dir  string
}

// Start starts a ZooKeeper and waits until it answers; it is stopped at the test's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	cp, err := Classpath()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, cp: cp}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("zookeeper output:\n%s", s.Logs())
		}
		s.Stop()
	})
	// The port is free when picked and may be taken again before java binds it: then
	// another one is picked.
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = ln.Addr().String()
		ln.Close()
		_, s.port, _ = net.SplitHostPort(s.Addr)
		err = s.run(t)
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
	}
}

// errPortTaken: ZooKeeper exited because its port was in use.
var errPortTaken = errors.New("zookeeper: port in use")

// Restart stops the server and starts a new one on the same port. fresh: with an empty
// data directory, so every session and node is gone (clients' sessions expire when they
// reconnect); otherwise with the same data (sessions survive if clients reconnect in time).
func (s *Server) Restart(t testing.TB, fresh bool) {
	t.Helper()
	s.Stop()
	if fresh {
		s.mu.Lock()
		s.dir = ""
		s.mu.Unlock()
	}
	s.start(t)
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	if err := s.run(t); err != nil {
		t.Fatal(err)
	}
}

// run starts the server on s.port and waits until it answers.
func (s *Server) run(t testing.TB) error {
	t.Helper()
	s.mu.Lock()
	if s.dir == "" {
		s.dir = t.TempDir()
	}
	dir := s.dir
	s.mu.Unlock()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Join([]string{
		"tickTime=500",
		"initLimit=10",
		"syncLimit=5",
		"dataDir=" + data,
		"clientPort=" + s.port,
		"clientPortAddress=127.0.0.1",
		"admin.enableServer=false",
		"4lw.commands.whitelist=ruok,srvr,stat",
		"minSessionTimeout=1000",
		"maxSessionTimeout=60000",
		"",
	}, "\n")
	cfgPath := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	cmd := exec.Command("java",
		"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.admin.enableServer=false",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", s.cp, "org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("zookeeper: start java: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.logs = cmd, done, logs
	s.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		if Serving(s.Addr, time.Second) {
			return nil
		}
		select {
		case <-done:
			out := logs.String()
			s.Stop()
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, s.Addr)
			}
			return fmt.Errorf("zookeeper exited before answering on %s:\n%s", s.Addr, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			out := logs.String()
			s.Stop()
			return fmt.Errorf("zookeeper did not answer on %s within 60s:\n%s", s.Addr, out)
		}
	}
}

// Serving asks the server with "srvr" and reports whether it serves requests ("ruok" may
// answer "imok" before the database is loaded).
func Serving(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return false
	}
	b, _ := io.ReadAll(io.LimitReader(c, 4096))
	return bytes.Contains(b, []byte("Mode: "))
}

// Stop kills the server's process group (SIGTERM, then SIGKILL after 5s) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.t.Errorf("zookeeper (pid %d) did not exit after SIGKILL", pgid)
		}
	}
	// The port is free once the process is gone; wait until it is, bounded.
	for i := 0; i < 50; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Logs is what the server printed (warnings and errors).
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// Session opens a plain ZooKeeper session with addr, as another application would, and
// waits for it (15 s at most). It is closed at the test's cleanup, or earlier by the
// returned func, which also waits for the client's goroutines. The client library's
// messages (reconnect attempts while a server is down) are dropped.
func Session(t testing.TB, addr string, sessionTimeout time.Duration) (*zk.Conn, func()) {
	t.Helper()
	c, ev, err := zk.Connect([]string{addr}, sessionTimeout, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	closeConn := func() {
		once.Do(func() {
			c.Close()
			for range ev { // closed when the client's goroutines have ended
			}
		})
	}
	t.Cleanup(closeConn)
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for c.State() != zk.StateHasSession {
		select {
		case <-ev: // a state change
		case <-deadline.C:
			closeConn()
			t.Fatalf("no zookeeper session with %s", addr)
		}
	}
	return c, closeConn
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}
