package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// TestIntegrityTLS is TestIntegritySoak over TLS, whose listeners run a goroutine per
// connection: HTTP/1.1 with TLS termination to a plaintext HTTP/1 upstream; HTTP/2 (ALPN
// h2) to an h2 upstream over TLS, the cluster verifying the upstream's certificate with
// a test CA; tcp_proxy with TLS termination to a plaintext upstream; HTTP/1.1 with mutual
// TLS (verify_client), whose listener refuses a client without a certificate. The same
// requests, upstream behaviours and checks as the soak: every answer that completes is
// byte-exact for its own request, every deliberate failure ends cleanly, the upstreams
// get the bodies the clients sent; after the load the process is back at the resources
// it held before it, and exits 0 on SIGTERM.
//
// MOSNLITE_SOAK_SEED=N replays a run's requests (not its timing).
func TestIntegrityTLS(t *testing.T) {
	seed := soakSeed(t)
	began := time.Now()
	var phases []string
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(began).Round(10*time.Millisecond)))
	}
	data := soakData(seed, 1)

	// One CA signs the proxy's listener certificate, the h2 upstream's certificate and
	// the mutual-TLS client's certificate.
	ca := tlstest.NewCA(t)
	serverCert := ca.Leaf(t, "127.0.0.1", "localhost")
	clientCert := ca.Leaf(t, "soak-client")
	listenerTLS := map[string]any{"status": true, "cert_chain": serverCert.CertPEM, "private_key": serverCert.KeyPEM}
	mutualTLS := map[string]any{"status": true, "cert_chain": serverCert.CertPEM, "private_key": serverCert.KeyPEM,
		"ca_cert": ca.PEM, "verify_client": true}

	upErrs := &soakNotes{}
	h1Up := httptest.NewServer(soakHTTPHandler(upErrs))
	t.Cleanup(h1Up.Close)
	h2Up := httptest.NewUnstartedServer(soakHTTPHandler(upErrs))
	h2Up.EnableHTTP2 = true
	h2Up.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "127.0.0.1").TLS(t)}, NextProtos: []string{"h2"}}
	h2Up.StartTLS()
	t.Cleanup(h2Up.Close)
	tcpUp := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakTCP(c, upErrs) })
	dropUpstreams := func() {
		h1Up.CloseClientConnections()
		h2Up.CloseClientConnections()
		tcpUp.CloseConns()
	}

	h1, h2, tcp, mtls := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	cfg := soakConfig(t, []soakListener{
		soakHTTPListener("h1", h1, "Http1", "h1up"),
		soakHTTPListener("h2", h2, "Http2", "h2up"),
		soakTCPListener("tcp", tcp, "tcpup"),
		soakHTTPListener("mtls", mtls, "Http1", "h1up"),
	}, map[string]string{"h1up": hostOf(h1Up), "h2up": strings.TrimPrefix(h2Up.URL, "https://"), "tcpup": tcpUp.Addr()})
	cfg = soakWithTLS(t, cfg,
		map[string]map[string]any{"h1": listenerTLS, "h2": listenerTLS, "tcp": listenerTLS, "mtls": mutualTLS},
		map[string]map[string]any{"h2up": {"status": true, "ca_cert": ca.PEM, "alpn": "h2"}})
	p := framework.StartProxy(t, cfg)

	clientTLS := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
	h1TLS := clientTLS.Clone()
	h1TLS.NextProtos = []string{"http/1.1"}
	mtlsTLS := h1TLS.Clone()
	mtlsTLS.Certificates = []tls.Certificate{clientCert.TLS(t)}
	protos := []*soakProto{
		{name: "http1-tls", workers: 6, pipelined: 2, run: soakHTTP1Dial(soakTLSDialer(h1, h1TLS))},
		{name: "h2-tls", workers: 6, run: soakHTTP2TLS(h2, clientTLS)},
		{name: "tcp_proxy-tls", workers: 6, run: soakTCPDial(soakTLSDialer(tcp, clientTLS))},
		{name: "http1-mtls", workers: 4, pipelined: 1, run: soakHTTP1Dial(soakTLSDialer(mtls, mtlsTLS))},
	}
	for i, pr := range protos {
		pr.seed, pr.index, pr.data, pr.tally = seed, uint64(i+1), data, &soakTally{name: pr.name}
	}

	phase("started")
	// A warm-up without faults: the pools and their watchers exist before the baseline.
	runSoak(protos, soakRound{perWorker: 2})
	for _, pr := range protos {
		if pr.tally.ok.Load() == 0 || pr.tally.failed() {
			t.Fatalf("warm-up: %s\n  %s", pr.tally.summary(), strings.Join(pr.tally.notes.list(), "\n  "))
		}
		pr.tally = &soakTally{name: pr.name}
	}
	// The mutual-TLS listener refuses a client without a certificate: no answer comes.
	if err := soakNoClientCert(mtls, h1TLS); err != nil {
		t.Fatal(err)
	}
	phase("warm-up")
	dropUpstreams()
	lc := framework.NewLeakCheck(t, p)
	phase("baseline")

	runSoak(protos, soakRound{until: time.Now().Add(soakTLSLoad), faults: true, perWorker: 1 << 30})
	phase("load")
	for _, pr := range protos {
		t.Log(pr.tally.summary())
	}
	for _, pr := range protos {
		if pr.tally.failed() {
			t.Errorf("%s: %d garbled, %d unexpected failures:\n  %s", pr.name, pr.tally.garbled.Load(),
				pr.tally.unexpected.Load(), strings.Join(pr.tally.notes.list(), "\n  "))
		}
		if pr.tally.ok.Load() == 0 {
			t.Errorf("%s: no request answered", pr.name)
		}
	}
	if n := upErrs.n.Load(); n > 0 {
		t.Errorf("the upstreams got %d garbled requests:\n  %s", n, strings.Join(upErrs.list(), "\n  "))
	}
	if t.Failed() {
		t.Fatalf("seed %d", seed)
	}

	dropUpstreams()
	lc.Check(t)
	phase("leak check")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	phase("exit")
	t.Logf("at: %s", strings.Join(phases, ", "))
}

// soakTLSLoad is TestIntegrityTLS's load phase.
const soakTLSLoad = 7 * time.Second

// soakWithTLS adds tls_context to the listeners (by name, first filter chain) and to the
// clusters (by name) of cfg, a JSON config.
func soakWithTLS(t *testing.T, cfg string, listeners, clusters map[string]map[string]any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		t.Fatal(err)
	}
	for _, s := range m["servers"].([]any) {
		for _, l := range s.(map[string]any)["listeners"].([]any) {
			l := l.(map[string]any)
			if tc, ok := listeners[l["name"].(string)]; ok {
				l["filter_chains"].([]any)[0].(map[string]any)["tls_context"] = tc
			}
		}
	}
	for _, c := range m["cluster_manager"].(map[string]any)["clusters"].([]any) {
		c := c.(map[string]any)
		if tc, ok := clusters[c["name"].(string)]; ok {
			c["tls_context"] = tc
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// soakTLSDialer dials addr and completes the TLS handshake, both within 5 s.
func soakTLSDialer(addr string, cfg *tls.Config) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	}
}

// soakNoClientCert sends a request to a mutual-TLS listener without a client
// certificate: the connection must fail before any answer. (With TLS 1.3 the client's
// handshake completes before the server has checked it; the refusal comes on read.)
func soakNoClientCert(addr string, cfg *tls.Config) error {
	c, err := soakTLSDialer(addr, cfg)()
	if err != nil {
		return nil // refused in the handshake
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(soakTimeout))
	if _, err := io.WriteString(c, "GET /soak/no-cert HTTP/1.1\r\nHost: soak\r\n\r\n"); err != nil {
		return nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	switch {
	case soakTimedOut(err):
		return fmt.Errorf("a client without a certificate: no refusal in %v: %v", soakTimeout, err)
	case err == nil:
		resp.Body.Close()
		return fmt.Errorf("a client without a certificate got an answer from the mutual-TLS listener: %s", resp.Status)
	}
	return nil
}

// soakHTTP2TLS is net/http's HTTP/2 client over TLS (ALPN h2), two connections shared by
// the workers. An answer over another protocol than HTTP/2 is garbled.
func soakHTTP2TLS(addr string, cfg *tls.Config) func(pr *soakProto, round soakRound) {
	return func(pr *soakProto, round soakRound) {
		var clients [2]*http.Client
		for k := range clients {
			var mu sync.Mutex
			var conns []net.Conn
			tr := &http.Transport{
				TLSClientConfig:   cfg.Clone(),
				ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					var d net.Dialer
					c, err := d.DialContext(ctx, network, addr)
					if err == nil {
						mu.Lock()
						conns = append(conns, c)
						mu.Unlock()
					}
					return c, err
				},
			}
			clients[k] = &http.Client{Transport: tr, Timeout: soakTimeout}
			defer func() {
				tr.CloseIdleConnections()
				mu.Lock()
				defer mu.Unlock()
				for _, c := range conns {
					c.Close()
				}
			}()
		}
		pr.each(func(w int) {
			rng := pr.rng(w)
			c := clients[w%2]
			for i := 0; round.more(i); i++ {
				r := genReq(rng, pr.data, pr.id(w, i), kindHTTP, round.faults)
				var body io.Reader = bytes.NewReader(r.body)
				if r.chunks != nil {
					body = onlyReader{body} // no Content-Length
				}
				req, err := http.NewRequest("POST", "https://"+addr+"/soak/"+r.id, body)
				if err != nil {
					panic(err)
				}
				r.setHTTPHeaders(req.Header)
				resp, err := c.Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				o, d := checkHTTP(r, resp, got, err, true)
				if err == nil && (resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2") {
					o, d = outGarbled, fmt.Sprintf("answered over %s, not h2 over TLS", resp.Proto)
				}
				pr.tally.add(r, o, d)
			}
		})
	}
}
