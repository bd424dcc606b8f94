package cluster

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Breaker names one of a cluster's circuit breakers (Envoy's thresholds, DEFAULT priority).
// Each is a counter of resources in use with a limit: TryAcquire takes one if the count is
// below the limit and otherwise counts an overflow (upstream_overflow_total{cluster,breaker})
// and refuses, so the caller answers at once (503-class, Envoy's UO flag). Counts survive
// config updates; a lowered limit refuses new acquisitions until enough are released.
type Breaker uint8

const (
	// MaxConnections bounds open upstream connections, including ones being dialled.
	// Dial takes and releases it itself.
	MaxConnections Breaker = iota
	// MaxPendingRequests bounds picks waiting for a healthy host (pick_timeout), the one
	// queue a request joins: mosnlite queues none for a connection (a request at
	// max_connections is refused as an overflow). Pick takes and releases it itself.
	MaxPendingRequests
	// MaxRequests bounds requests in flight to the cluster (L7 proxy).
	MaxRequests
	// MaxRetries bounds retries in flight (router.RetryBudget, see TryAcquireRetry); the
	// retry budget (retrybudget.go) bounds their rate.
	MaxRetries
	numBreakers
)

// String returns the breaker's metric label: connections, pending, requests or retries.
func (b Breaker) String() string {
	switch b {
	case MaxConnections:
		return "connections"
	case MaxPendingRequests:
		return "pending"
	case MaxRequests:
		return "requests"
	case MaxRetries:
		return "retries"
	}
	return fmt.Sprintf("Breaker(%d)", uint8(b))
}

// Setting returns the breaker's circuit_breakers key, such as "max_connections".
func (b Breaker) Setting() string {
	switch b {
	case MaxConnections:
		return "max_connections"
	case MaxPendingRequests:
		return "max_pending_requests"
	case MaxRequests:
		return "max_requests"
	case MaxRetries:
		return "max_retries"
	}
	return b.String()
}

type breaker struct {
	n        atomic.Int64
	limit    atomic.Int64
	overflow prometheus.Counter
	_        [40]byte // keep each breaker's hot counter on its own cache line
}

// budgetLabel is the breaker label of retries refused by the retry budget.
const budgetLabel = "retry_budget"

// TryAcquire takes one unit of b if fewer than its limit are in use. It never blocks and
// does not allocate. Every successful TryAcquire must be matched by one Release. A unit of
// MaxRequests taken is a request sent to the cluster: it is a deposit into the retry
// budget (retrybudget.go), so the L7 proxies take one per request and none per retry.
func (c *Cluster) TryAcquire(b Breaker) bool {
	br := &c.breakers[b]
	if br.n.Add(1) > br.limit.Load() {
		br.n.Add(-1)
		br.overflow.Inc()
		return false
	}
	if b == MaxRequests {
		c.budget.deposit()
	}
	return true
}

// Release returns a unit taken with TryAcquire. Releasing more than was acquired is a bug
// in the caller and panics.
func (c *Cluster) Release(b Breaker) {
	if c.breakers[b].n.Add(-1) < 0 {
		c.breakers[b].n.Add(1)
		panic(fmt.Sprintf("cluster %q: circuit breaker %s released more often than acquired", c.name, b.Setting()))
	}
	if c.gone.Load() {
		c.sweepSeries()
	}
}

// Usage returns how many units of b are in use and its current limit.
func (c *Cluster) Usage(b Breaker) (inUse, limit int64) {
	return c.breakers[b].n.Load(), c.breakers[b].limit.Load()
}

// TryAcquireRetry allows a retry if both the retry budget and the max_retries breaker do:
// it withdraws from the budget and takes a max_retries slot; with ReleaseRetry it makes
// *Cluster a router.RetryBudget. Release the slot when the retried try ends; the
// withdrawal stays (the budget bounds the rate of retries, not those in flight). A refusal
// counts upstream_overflow_total with breaker "retry_budget" or "retries", whichever
// refused; the budget is asked first, and a withdrawal the breaker then refuses is refunded.
func (c *Cluster) TryAcquireRetry() bool {
	e, ok := c.budget.withdraw()
	if !ok {
		return false
	}
	if !c.TryAcquire(MaxRetries) {
		c.budget.refund(e)
		return false
	}
	return true
}

// ReleaseRetry returns a slot taken by TryAcquireRetry.
func (c *Cluster) ReleaseRetry() { c.Release(MaxRetries) }

// overflowError is Dial's error when b refused.
func (c *Cluster) overflowError(b Breaker) error {
	return fmt.Errorf("cluster %q: %w: %s %d reached", c.name, ErrOverflow, b.Setting(), c.breakers[b].limit.Load())
}

// breakerLimits returns the DEFAULT priority's limits: an absent threshold takes its
// default, a present one is kept as it is, 0 included (Envoy's semantics: max_retries 0
// allows no retry). A HIGH entry is accepted and unused: there are no request priorities.
func breakerLimits(cbs []config.CircuitBreaker) ([numBreakers]int64, error) {
	lim := [numBreakers]int64{
		MaxConnections:     config.DefaultCircuitMaxConnections,
		MaxPendingRequests: config.DefaultCircuitMaxPending,
		MaxRequests:        config.DefaultCircuitMaxRequests,
		MaxRetries:         config.DefaultCircuitMaxRetries,
	}
	seen := map[string]int{}
	for i, cb := range cbs {
		prio := cb.Priority
		if prio == "" {
			prio = "DEFAULT"
		}
		switch prio {
		case "DEFAULT", "HIGH":
		default:
			return lim, fmt.Errorf("circuit_breakers[%d].priority: unknown %q (known: %v)", i, cb.Priority, config.CircuitBreakerPriorities)
		}
		if j, dup := seen[prio]; dup {
			return lim, fmt.Errorf("circuit_breakers[%d].priority: second %s thresholds (also circuit_breakers[%d])", i, prio, j)
		}
		seen[prio] = i
		if prio != "DEFAULT" {
			continue
		}
		for b, v := range [numBreakers]*uint32{cb.MaxConnections, cb.MaxPendingRequests, cb.MaxRequests, cb.MaxRetries} {
			if v != nil {
				lim[b] = int64(*v) // 0 is a limit: nothing may be acquired
			}
		}
	}
	return lim, nil
}
