package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// reloadConfig is an HTTP/1 listener answering with a direct response, plus an admin
// endpoint; extra adds listeners.
func reloadConfig(listen, admin, body, extra string) string {
	_, adminPort, _ := net.SplitHostPort(admin)
	return fmt.Sprintf(`{
  "servers":[{"routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],
      "routers":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":%q}}]}]}],
    "listeners":[{"name":"h","address":%q,
      "filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}%s]}],
  "admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":%s}}},
  "drain":{"timeout":"2s"}}`, body, listen, extra, adminPort)
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitBody polls url until it answers want (a reload is asynchronous to the signal).
func waitBody(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never answered %q (last: %v)", url, want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadSIGHUP(t *testing.T) {
	listen, admin, second := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	p := framework.StartProxy(t, reloadConfig(listen, admin, "one", ""))
	if _, body := getBody(t, "http://"+listen+"/"); body != "one" {
		t.Fatalf("before reload: %q", body)
	}

	// A new route body and a new listener.
	extra := fmt.Sprintf(`,{"name":"h2","address":%q,"filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}`, second)
	if err := os.WriteFile(p.Config, []byte(reloadConfig(listen, admin, "two", extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitBody(t, "http://"+listen+"/", "two")
	waitBody(t, "http://"+second+"/", "two")

	// A broken file (a bad field): the old config keeps serving, the log names the path.
	broken := strings.Replace(reloadConfig(listen, admin, "three", extra), `"downstream_protocol":"Http1"`, `"downstream_protocol":"Htp1"`, 1)
	if err := os.WriteFile(p.Config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("servers[0].listeners[0].filter_chains[0].filters[0].config.downstream_protocol", 10*time.Second) {
		t.Fatalf("the log does not name the bad field's path:\n%s", p.Logs())
	}
	for _, addr := range []string{listen, second} {
		if _, body := getBody(t, "http://"+addr+"/"); body != "two" {
			t.Fatalf("after a broken reload, %s answers %q; want two", addr, body)
		}
	}
	_, metrics := getBody(t, "http://"+admin+"/metrics")
	for _, want := range []string{`mosnlite_config_reloads_total{result="success"} 1`, `mosnlite_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}

	// Not JSON at all (a file cut short), and a certificate that cannot be read: refused
	// the same way, each naming where, and the last good config keeps serving.
	whole := reloadConfig(listen, admin, "three", extra)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tlsExtra := strings.Replace(extra, `"filter_chains":[{"filters"`,
		fmt.Sprintf(`"filter_chains":[{"tls_context":{"status":true,"cert_chain":%q,"private_key":%q},"filters"`, missing, missing), 1)
	for _, bad := range []struct{ file, want string }{
		{whole[:len(whole)/2], "syntax error at line"},
		{reloadConfig(listen, admin, "three", tlsExtra), "tls_context.cert_chain"},
	} {
		if err := os.WriteFile(p.Config, []byte(bad.file), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !p.WaitLog(bad.want, 10*time.Second) {
			t.Fatalf("the log does not say %q:\n%s", bad.want, p.Logs())
		}
		for _, addr := range []string{listen, second} {
			if _, body := getBody(t, "http://"+addr+"/"); body != "two" {
				t.Fatalf("after a reload of a broken file (%s), %s answers %q; want two", bad.want, addr, body)
			}
		}
	}
	if _, metrics := getBody(t, "http://"+admin+"/metrics"); !strings.Contains(metrics, `mosnlite_config_reloads_total{result="failure"} 3`) {
		t.Fatalf("/metrics does not count the three failed reloads:\n%s", metrics)
	}
	if err := os.WriteFile(p.Config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}

	// POST /api/v1/reload does the same: the error comes back as JSON; GET is refused.
	resp, err := http.Post("http://"+admin+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "downstream_protocol") {
		t.Fatalf("POST /api/v1/reload (broken file) = %d %s", resp.StatusCode, b)
	}
	if code, _ := getBody(t, "http://"+admin+"/api/v1/reload"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/v1/reload = %d; want 405", code)
	}
	// Fixed file, removing h2: POST reloads it.
	if err := os.WriteFile(p.Config, []byte(reloadConfig(listen, admin, "four", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Post("http://"+admin+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/reload = %d %s", resp.StatusCode, b)
	}
	if _, body := getBody(t, "http://"+listen+"/"); body != "four" {
		t.Fatalf("after POST reload: %q", body)
	}
	if c, err := net.DialTimeout("tcp", second, time.Second); err == nil {
		c.Close()
		t.Fatal("removed listener h2 still accepts")
	}
	// The process still exits cleanly.
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
