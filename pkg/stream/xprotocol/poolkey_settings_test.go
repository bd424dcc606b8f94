package xprotocol_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestClusterTLSUpdateMovesNewRequests: when cluster "c" is updated in place from plain to
// upstream TLS on the same address, the next request goes out on a new TLS connection,
// not on the pooled plain one; a request in flight on the plain connection is answered,
// and the plain connection then closes.
func TestClusterTLSUpdateMovesNewRequests(t *testing.T) {
	ca := tlstest.NewCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The engine writes first: a request, or a ClientHello once the cluster has TLS.
	sniff := testutil.NewPlainOrTLS(&tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "127.0.0.1", "one.test").TLS(t)}})
	up := &boltServer{ln: sniff.Listener(ln, testTimeout), xp: bolt.New(bolt.Options{}), open: map[net.Conn]struct{}{}, gate: make(chan struct{})}
	up.wg.Add(1)
	go up.serve()
	t.Cleanup(up.close)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("before the update: status %d", f.Status)
	}
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 2, Headers: hdrs("service", "gated")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "the gated request upstream", func() bool { return up.reqs.Load() == 2 })

	cfg := config.Cluster{Name: "c", Type: "SIMPLE", Hosts: []config.Host{{Address: up.addr()}},
		TLSContext: &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "one.test"}}
	if err := v.clusters.AddOrUpdate(cfg); err != nil {
		t.Fatal(err)
	}
	if f := roundTrip(t, c, r, bolt.Message{ID: 3, Headers: hdrs("service", "echo")}); f.Status != 0 {
		t.Fatalf("after the update: status %d", f.Status)
	}
	if got := sniff.Seen(); len(got) != 2 || got[1] != "tls one.test" {
		t.Fatalf("upstream connections %q; want the request after the update on a new one, TLS to one.test", got)
	}
	up.release()
	f, err := r.next()
	if err != nil || f.ID != 2 || f.Status != 0 {
		t.Fatalf("the request in flight during the update: %v %+v; want answered", err, f)
	}
	testutil.Eventually(t, testTimeout, "the plain connection to close", func() bool { return v.e.UpstreamStats().Conns == 1 })
}
