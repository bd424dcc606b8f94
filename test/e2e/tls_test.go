package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// withTLS adds tls_context to the first filter chain of every listener in cfg (JSON).
func withTLS(t *testing.T, cfg string, tc map[string]any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		t.Fatal(err)
	}
	for _, s := range m["servers"].([]any) {
		for _, l := range s.(map[string]any)["listeners"].([]any) {
			fc := l.(map[string]any)["filter_chains"].([]any)[0].(map[string]any)
			fc["tls_context"] = tc
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tlsFiles writes a fresh CA's server certificate for 127.0.0.1 and localhost: the
// certificate as a file, the key as inline PEM (MOSN accepts either form per field).
func tlsFiles(t *testing.T) (*tlstest.CA, map[string]any) {
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "127.0.0.1", "localhost")
	certFile := filepath.Join(t.TempDir(), "server.pem")
	if err := os.WriteFile(certFile, []byte(leaf.CertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, map[string]any{"status": true, "cert_chain": certFile, "private_key": leaf.KeyPEM}
}

// TestTLSListenerALPN: a TLS proxy listener (downstream Auto) in front of an HTTP/1
// upstream. Clients negotiating h2 get HTTP/2, clients offering only http/1.1 (or no ALPN
// at all, which is sniffed) get HTTP/1.1; all get the upstream's answer.
func TestTLSListenerALPN(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.URL.Path)
	}))
	defer up.Close()
	ca, tc := tlsFiles(t)
	addr := framework.FreePort(t)
	framework.StartProxy(t, withTLS(t, httpProxyConfig(addr, "Auto", "Http1", []any{routeTo("/", nil)},
		strings.TrimPrefix(up.URL, "http://")), tc))
	const want = "upstream saw GET /tls"

	get := func(tr *http.Transport) (*http.Response, string) {
		t.Helper()
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		resp, err := c.Get("https://" + addr + "/tls")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	tlsCfg := &tls.Config{RootCAs: ca.Pool()}

	// ALPN h2.
	resp, body := get(&http.Transport{TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true})
	if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" || body != want {
		t.Errorf("h2: proto %s, body %q", resp.Proto, body)
	}
	// HTTP/1.1 only (an empty TLSNextProto map turns HTTP/2 off; ALPN offers http/1.1).
	h1 := tlsCfg.Clone()
	h1.NextProtos = []string{"http/1.1"}
	resp, body = get(&http.Transport{TLSClientConfig: h1,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}})
	if resp.ProtoMajor != 1 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" || body != want {
		t.Errorf("http/1.1: proto %s, ALPN %q, body %q", resp.Proto, resp.TLS.NegotiatedProtocol, body)
	}
	// No ALPN: the Auto listener sniffs HTTP/1.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "" {
		t.Errorf("no ALPN offered, %q negotiated", p)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no ALPN: %v", err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || string(b) != want {
		t.Errorf("no ALPN: %d %q", r.StatusCode, b)
	}
	// A plaintext client is refused (closed), and the listener keeps serving.
	pc := framework.Dial(t, addr)
	pc.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(pc, "GET /tls HTTP/1.1\r\nHost: x\r\n\r\n")
	if rest, _ := io.ReadAll(pc); strings.Contains(string(rest), "upstream saw") {
		t.Errorf("plaintext request over the TLS listener was proxied")
	}

	// curl, if present, negotiates h2 too.
	if curl, err := exec.LookPath("curl"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, "-sS", "-k", "--http2", "-o", "-", "-w", "\n%{http_version}",
			"https://"+addr+"/tls").CombinedOutput()
		if err != nil || string(out) != want+"\n2" {
			t.Errorf("curl --http2: %v: %q", err, out)
		}
	}
}

// TestTLSListenerGRPC: grpc-go over TLS (ALPN h2) → mosnlite (Auto) → grpc-go over h2c.
func TestTLSListenerGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&echoDesc, echoService{})
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()

	ca, tc := tlsFiles(t)
	addr := framework.FreePort(t)
	framework.StartProxy(t, withTLS(t, httpProxyConfig(addr, "Auto", "Http2", []any{
		map[string]any{"match": map[string]any{"prefix": "/mosnlite.test.Echo/"}, "route": map[string]any{"cluster_name": "up", "timeout": "20s"}},
	}, ln.Addr().String()), tc))

	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, out := []byte("tls"), []byte(nil)
	if err := cc.Invoke(ctx, "/mosnlite.test.Echo/Unary", &in, &out); err != nil {
		t.Fatalf("unary over TLS: %v", err)
	}
	if !strings.HasPrefix(string(out), "echo:tls") {
		t.Fatalf("unary over TLS: %q", out)
	}
}

// TestTLSConfigErrors: a TLS listener whose certificate file is missing does not start,
// and the error names the file and the field.
func TestTLSConfigErrors(t *testing.T) {
	_, tc := tlsFiles(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tc["cert_chain"] = missing
	path := filepath.Join(t.TempDir(), "config.json")
	cfg := withTLS(t, httpProxyConfig(framework.FreePort(t), "Auto", "Http1", []any{routeTo("/", nil)}, "127.0.0.1:1"), tc)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := framework.RunCLI(t, "start", "-c", path)
	if code == 0 || !strings.Contains(out, "tls_context.cert_chain") || !strings.Contains(out, missing) {
		t.Fatalf("start with a missing certificate: exit %d\n%s", code, out)
	}
	// Missing key: the validator names the JSON path.
	delete(tc, "private_key")
	tc["cert_chain"] = "x.pem"
	cfg = withTLS(t, httpProxyConfig(framework.FreePort(t), "Auto", "Http1", []any{routeTo("/", nil)}, "127.0.0.1:1"), tc)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = framework.RunCLI(t, "validate", "-c", path)
	if code == 0 || !strings.Contains(out, "servers[0].listeners[0].filter_chains[0].tls_context") {
		t.Fatalf("validate without private_key: exit %d\n%s", code, out)
	}
}

// TestTLSTCPProxy: tcp_proxy behind TLS termination copies plainly (no splice from a TLS
// connection): 1 MiB each way, the client's half-close (close_notify) reaches the
// upstream, whose trailer comes back.
func TestTLSTCPProxy(t *testing.T) {
	up := framework.EchoServer(t, "BYE")
	ca, tc := tlsFiles(t)
	addr := framework.FreePort(t)
	framework.StartProxy(t, withTLS(t, tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil), tc))
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := strings.Repeat("0123456789abcdef", 1<<16)
	errc := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, msg)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil || string(got) != msg+"BYE" {
		t.Fatalf("echo through TLS tcp_proxy: %v, %d bytes (want %d)", err, len(got), len(msg)+3)
	}
}

// TestTLSUpstream: plain HTTP/1 downstream → mosnlite → an HTTPS upstream, the cluster's
// tls_context verifying it with ca_cert; and TLS at both ends with an h2 client.
func TestTLSUpstream(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls upstream saw %s over tls=%v", r.URL.Path, r.TLS != nil)
	}))
	defer up.Close()
	upCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}))
	addr := framework.FreePort(t)
	cfg := httpProxyConfig(addr, "Auto", "Http1", []any{routeTo("/", nil)}, strings.TrimPrefix(up.URL, "https://"))
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		t.Fatal(err)
	}
	cl := m["cluster_manager"].(map[string]any)["clusters"].([]any)[0].(map[string]any)
	cl["tls_context"] = map[string]any{"status": true, "ca_cert": upCA}
	b, _ := json.Marshal(m)
	ca, tc := tlsFiles(t)
	framework.StartProxy(t, withTLS(t, string(b), tc))

	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + addr + "/both")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "tls upstream saw /both over tls=true" {
		t.Fatalf("%s %q", resp.Proto, body)
	}
}

// TestTLSListenerExplicitProtocol: with one downstream protocol named, the TLS listener
// advertises only that protocol's ALPN ID, so a client offering both gets the right one.
func TestTLSListenerExplicitProtocol(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	defer up.Close()
	for _, tc := range []struct {
		down      string
		wantMajor int
	}{{"Http1", 1}, {"Http2", 2}} {
		t.Run(tc.down, func(t *testing.T) {
			ca, tlsCtx := tlsFiles(t)
			addr := framework.FreePort(t)
			framework.StartProxy(t, withTLS(t, httpProxyConfig(addr, tc.down, "Http1", []any{routeTo("/", nil)},
				strings.TrimPrefix(up.URL, "http://")), tlsCtx))
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != tc.wantMajor || string(b) != "ok" {
				t.Fatalf("%s listener: %s %q", tc.down, resp.Proto, b)
			}
		})
	}
}
