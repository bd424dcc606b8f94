package proxy

import (
	"context"
	"net/http"
	"time"
)

// roundTripH2 sends a bodiless request to the target's HTTP/2 upstream and returns the
// response, repeating the request while nothing of it has gone downstream: once on a new
// connection when a pooled one turns out closed, and as the route's retry policy allows
// (retry_on, num_retries, retry_timeout per try, the route timeout, the cluster's
// max_retries breaker) on another host when the cluster has one. out.URL.Host follows
// the host of each try.
func (p *Proxy) roundTripH2(ctx context.Context, t *h2Target, out *http.Request) (*http.Response, error) {
	r := fastRetry{tryStart: t.start}
	defer r.release(t)
	for {
		resp, err := p.tryH2(ctx, t, out, &r)
		if ctx.Err() != nil {
			return resp, err
		}
		status := 0
		if err == nil {
			status = resp.StatusCode
		} else if le, ok := err.(*errLocal); ok && le != errConnect && le != errTimeout {
			return nil, err // overflow: no retry
		}
		if !r.retryStatus(p, t, status) {
			return resp, err
		}
		if resp != nil {
			_ = resp.Body.Close()
		}
		if err := p.nextHost(ctx, t, t.host.Addr()); err != nil {
			return nil, err
		}
		out.URL.Host = t.host.Addr()
		if t.rt.AutoHostRewrite() {
			out.Host = t.host.Addr()
		}
	}
}

// tryH2 is one try of roundTripH2. A per-try timeout bounds the wait for the response
// head only: once the head is in, the body streams under the request's own context.
func (p *Proxy) tryH2(ctx context.Context, t *h2Target, out *http.Request, r *fastRetry) (*http.Response, error) {
	cc, err := p.h2Conn(ctx, t)
	if err != nil {
		return nil, err
	}
	req, timer := out, (*time.Timer)(nil)
	if pt := t.rt.Retry().PerTryTimeout(); pt > 0 {
		tctx, cancel := context.WithCancel(ctx) // cancelled with ctx when the request ends
		timer = time.AfterFunc(time.Until(r.tryStart.Add(pt)), cancel)
		req = out.WithContext(tctx)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil && retryFresh(ctx, out, err) && (timer == nil || timer.Stop()) {
		// A pooled connection may have been closed by the upstream while it was taken
		// (GOAWAY, idle close): the request is sent once more on a new connection.
		if cc, cerr := p.h2Dial(ctx, t); cerr == nil {
			if timer != nil {
				timer.Reset(time.Until(r.tryStart.Add(t.rt.Retry().PerTryTimeout())))
			}
			resp, err = cc.RoundTrip(req)
		}
	}
	if timer != nil && !timer.Stop() && err != nil {
		return nil, errTimeout // the try outlived retry_timeout
	}
	if err != nil {
		return nil, classifyUpstreamErr(t, err)
	}
	return resp, nil
}
