package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// Bolt and dubbo clients for TestDrainUnderLoadLosesNoRequest. They behave as SOFA and
// Dubbo consumers do when their provider goes: on the go-away (bolt cmdcode 100, Dubbo's
// readonly event) a connection takes no new requests, its requests in flight are waited
// for, and the connection is left for the provider to close.

const drainService = "svc.drain"

// drainRPCConfig adds to cfg (an httpProxyConfig) a bolt listener on boltListen and a
// dubbo listener on dubboListen, each with a router of its own sending drainService
// (bolt) or echoIface (dubbo) to a cluster of one host.
func drainRPCConfig(cfg map[string]any, boltListen, boltUp, dubboListen, dubboUp string) {
	srv := cfg["servers"].([]any)[0].(map[string]any)
	cm := cfg["cluster_manager"].(map[string]any)
	add := func(name, listen string, proxy map[string]any, service, up string) {
		proxy["router_config_name"] = name
		srv["routers"] = append(srv["routers"].([]any), map[string]any{
			"router_config_name": name,
			"virtual_hosts": []any{map[string]any{"name": name, "domains": []any{"*"},
				"routers": []any{rpcRoute(name, "", hdr{"service", service})}}},
		})
		srv["listeners"] = append(srv["listeners"].([]any), map[string]any{
			"name": name, "address": listen, "bind_port": true,
			"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy", "config": proxy}}}},
		})
		cm["clusters"] = append(cm["clusters"].([]any), rpcCluster(name, up))
	}
	add("bolt", boltListen, map[string]any{"downstream_protocol": "bolt"}, drainService, boltUp)
	add("dubbo", dubboListen, map[string]any{"downstream_protocol": "X",
		"extend_config": map[string]any{"sub_protocol": "dubbo"}}, echoIface, dubboUp)
}

// drainConn is one multiplexed client connection of either protocol.
type drainConn struct {
	name string
	// call sends request n of caller w (a payload of its own) and checks the answer: status
	// success, the payload echoed, the upstream's name.
	call func(ctx context.Context, w, n int) error
	// slow sends rpcpeer.MethodSlow, answered after the server's SlowDelay.
	slow   func(ctx context.Context) error
	goAway <-chan struct{}
	done   <-chan struct{}
	// strays is the frames that answered no request or could not be decoded.
	strays func() int64
	close  func() error
}

func dialBoltDrain(t *testing.T, addr, upstream string, i int) *drainConn {
	c, err := rpcpeer.DialBolt(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	check := func(r *rpcpeer.BoltResponse, version byte, content []byte) error {
		m := r.Message()
		if srv, _ := r.Header(rpcpeer.BoltHeaderServer); m.Status != 0 || m.Version != version ||
			!bytes.Equal(m.Content, content) || srv != upstream {
			return fmt.Errorf("status %d version %d server %q content %q, want 0, %d, %q, %q",
				m.Status, m.Version, srv, m.Content, version, upstream, content)
		}
		return nil
	}
	return &drainConn{
		name: "bolt-" + strconv.Itoa(i),
		call: func(ctx context.Context, w, n int) error {
			version := byte(1 + (w+n)%2)
			content := fmt.Appendf(nil, "bolt conn %d caller %d request %d", i, w, n)
			r, err := c.Call(ctx, rpcpeer.BoltRequest(version, drainService, "echo", content))
			if err != nil {
				return err
			}
			return check(r, version, content)
		},
		slow: func(ctx context.Context) error {
			content := fmt.Appendf(nil, "bolt conn %d slow", i)
			r, err := c.Call(ctx, rpcpeer.BoltRequest(2, drainService, rpcpeer.MethodSlow, content))
			if err != nil {
				return err
			}
			return check(r, 2, content)
		},
		goAway: c.GoAway(),
		done:   c.Done(),
		strays: c.Unmatched.Load,
		close:  c.Close,
	}
}

func dialDubboDrain(t *testing.T, addr, upstream string, i int) *drainConn {
	c, err := rpcpeer.DialDubbo(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	call := func(ctx context.Context, method, arg, seq string) error {
		res, err := c.Call(ctx, dubboSvc(echoIface, "", "1.0.0", method), []any{arg}, map[string]string{"seq": seq})
		if err != nil {
			return err
		}
		if res.Status != hessian.Response_OK || res.Exception != nil || res.Value != arg ||
			res.Attachments[rpcpeer.AttServer] != upstream || res.Attachments["seq"] != seq {
			return fmt.Errorf("status %d exception %v value %v attachments %v, want 20, %q, seq %s",
				res.Status, res.Exception, res.Value, res.Attachments, arg, seq)
		}
		return nil
	}
	return &drainConn{
		name: "dubbo-" + strconv.Itoa(i),
		call: func(ctx context.Context, w, n int) error {
			return call(ctx, "echo", fmt.Sprintf("dubbo conn %d caller %d request %d", i, w, n), fmt.Sprintf("%d.%d", w, n))
		},
		slow: func(ctx context.Context) error {
			return call(ctx, rpcpeer.MethodSlow, fmt.Sprintf("dubbo conn %d slow", i), "slow")
		},
		goAway: c.GoAway(),
		done:   c.Done(),
		strays: func() int64 { return c.Unmatched.Load() + c.Undecodable.Load() },
		close:  c.Close,
	}
}

// drainTally counts what the RPC clients saw.
type drainTally struct {
	ok, late, failed atomic.Int64 // late: answered after the connection's go-away
	mu               sync.Mutex
	firstErr         error
}

func (d *drainTally) fail(err error) {
	d.failed.Add(1)
	d.mu.Lock()
	if d.firstErr == nil {
		d.firstErr = err
	}
	d.mu.Unlock()
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
	}
	return false
}

// load runs callers on c until the go-away (or stop): each sends a request, waits for
// its answer, and sends the next unless the connection was told to go or closed; a caller
// stops at its first failure. With slow, one more request stays in flight from before the
// drain until after the go-away, and must be answered after it.
func (d *drainTally) load(ctx context.Context, wg *sync.WaitGroup, c *drainConn, callers int, slow bool, stop *atomic.Bool) {
	for w := range callers {
		wg.Go(func() {
			for n := 0; !stop.Load() && !closed(c.goAway) && !closed(c.done) && n < 100000; n++ {
				if err := c.call(ctx, w, n); err != nil {
					d.fail(fmt.Errorf("%s caller %d request %d: %w", c.name, w, n, err))
					return // a client would not send again on a connection that failed under it
				}
				d.ok.Add(1)
				if closed(c.goAway) {
					d.late.Add(1)
				}
			}
		})
	}
	if slow {
		wg.Go(func() {
			if err := c.slow(ctx); err != nil {
				d.fail(fmt.Errorf("%s slow request: %w", c.name, err))
				return
			}
			if !closed(c.goAway) {
				d.fail(fmt.Errorf("%s slow request answered before the go-away", c.name))
				return
			}
			d.ok.Add(1)
			d.late.Add(1)
		})
	}
}
