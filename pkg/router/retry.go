package router

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// RetryPolicy is a route's compiled retry_policy. A nil *RetryPolicy is valid and never
// retries.
//
// A try is retriable when it got no response (status 0: connect failure, reset, per-try
// timeout) or a response whose status is listed in retriable_status_codes; with no list,
// any 5xx is retriable. num_retries is taken exactly as configured (MOSN raises values
// below 3; mosnlite does not), so 0 means no retry.
type RetryPolicy struct {
	numRetries uint32
	perTry     time.Duration
	listed     bool       // retriable_status_codes was given
	codes      [10]uint64 // bit set of listed status codes 0..639
}

// RetryBudget is the cluster's bound on retries (*cluster.Cluster): its retry budget,
// which bounds their rate, and its max_retries circuit breaker, which bounds those in
// flight. TryAcquireRetry allows a retry when both do and takes a breaker slot; the
// caller releases it when the retried try ends.
type RetryBudget interface{ TryAcquireRetry() bool }

func newRetryPolicy(c *config.RetryPolicy) *RetryPolicy {
	if c == nil || !c.RetryOn {
		return nil
	}
	p := &RetryPolicy{numRetries: c.NumRetries, perTry: c.RetryTimeout.Or(0)}
	for _, code := range c.RetriableStatusCodes {
		p.listed = true
		if code < 640 {
			p.codes[code/64] |= 1 << (code % 64)
		}
	}
	return p
}

// NumRetries is the number of retries allowed after the first try.
func (p *RetryPolicy) NumRetries() int {
	if p == nil {
		return 0
	}
	return int(p.numRetries)
}

// PerTryTimeout bounds each try (retry_timeout); 0 means only the route timeout applies.
func (p *RetryPolicy) PerTryTimeout() time.Duration {
	if p == nil {
		return 0
	}
	return p.perTry
}

// Retriable reports whether a try that ended with status (0: no response) may be retried.
func (p *RetryPolicy) Retriable(status int) bool {
	switch {
	case p == nil || status < 0:
		return false
	case status == 0:
		return true
	case p.listed:
		return status < 640 && p.codes[status/64]&(1<<(status%64)) != 0
	}
	return status >= 500 && status <= 599
}

// ShouldRetry decides whether to retry after try number attempt (0 for the first try)
// ended with status (0: no response). It never retries once any of the response has been
// sent downstream, after NumRetries retries, or on a status that is not retriable. Only
// when all of that allows a retry is budget asked (nil: unlimited), so a refused budget —
// the retry budget is spent or the max_retries breaker is open — means no retry, and
// budget is drawn on only for a retry that happens.
func (p *RetryPolicy) ShouldRetry(attempt, status int, responseStarted bool, budget RetryBudget) bool {
	if p == nil || responseStarted || attempt < 0 || attempt >= int(p.numRetries) || !p.Retriable(status) {
		return false
	}
	return budget == nil || budget.TryAcquireRetry()
}
