package dubbo

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// TestUnreachableZooKeeperHoldsOnlyItsCalls: while mosnlite waits (registry_timeout, 5s)
// for a session with a ZooKeeper that does not answer, a call on the local registry is
// answered at once; the calls on that ZooKeeper share the one connection attempt and
// each gets its error.
func TestUnreachableZooKeeperHoldsOnlyItsCalls(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing answers there
	s, err := New(testConfig(t, 2046), Deps{Applier: newRecorder(), Log: zaptest.NewLogger(t), CreateRouter: true})
	if err != nil {
		t.Fatal(err)
	}
	var dials, dialed atomic.Int32
	started := make(chan struct{}, 1)
	real := s.dial
	s.dial = func(addr string) (backend, error) {
		dials.Add(1)
		started <- struct{}{}
		defer dialed.Add(1)
		return real(addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// Two calls on the unreachable ZooKeeper.
	var wg sync.WaitGroup
	answers := make(chan Response, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(req("zookeeper", dead, iface, "", "1.0", "echo"))
			resp, err := httpClient.Post("http://"+s.Addr().String()+"/pub", "application/json", bytes.NewReader(b))
			if err != nil {
				answers <- Response{ErrNo: -1, ErrMsg: err.Error()}
				return
			}
			defer resp.Body.Close()
			var r Response
			_ = json.NewDecoder(resp.Body).Decode(&r)
			answers <- r
		}()
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection attempt to the ZooKeeper")
	}
	mustOK(t, s, "/pub", req("local", "", iface, "", "1.0", "echo"))
	if dialed.Load() != 0 {
		t.Fatal("the local registry's call waited for the ZooKeeper connection attempt")
	}
	wg.Wait()
	close(answers)
	for r := range answers {
		if r.ErrNo != 1 || r.ErrMsg == "" {
			t.Errorf("call on an unreachable ZooKeeper: %+v; want err_no 1 with a message", r)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connection attempts for two calls; want 1", n)
	}
}
