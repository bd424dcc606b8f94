package fault

import (
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/filtertest"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
)

func run(t *testing.T, cfg string, h *filtertest.Handler, hs *filtertest.Headers) filter.Status {
	t.Helper()
	f, err := Factory(config.RawMessage(cfg))
	if err != nil {
		t.Fatal(err)
	}
	in := f.NewStreamFilter(h)
	defer in.OnDestroy()
	if hs == nil {
		hs = &filtertest.Headers{}
	}
	return in.OnRequestHeaders(hs, true)
}

func TestAbortAndDelay(t *testing.T) {
	h := &filtertest.Handler{}
	st := run(t, `{"delay":{"fixed_delay":"150ms","percentage":100},"abort":{"status":503,"percentage":100}}`, h, nil)
	if st != filter.Stop || h.Status != 503 || h.Delayed != 150*time.Millisecond {
		t.Fatalf("status %v reply %d delay %v", st, h.Status, h.Delayed)
	}
	if h.Flags != accesslog.FlagFaultAbort|accesslog.FlagFaultDelay {
		t.Fatalf("flags %v", h.Flags)
	}
	// MOSN's flat fault_inject names.
	h = &filtertest.Handler{}
	if st := run(t, `{"delay_percent":100,"delay_duration":"1s"}`, h, nil); st != filter.Continue || h.Delayed != time.Second || h.Status != 0 {
		t.Fatalf("flat delay: %v %v %d", st, h.Delayed, h.Status)
	}
	h = &filtertest.Handler{}
	if st := run(t, `{"abort_status":418,"abort_percent":100}`, h, nil); st != filter.Stop || h.Status != 418 {
		t.Fatalf("flat abort: %v %d", st, h.Status)
	}
}

func TestPercentage(t *testing.T) {
	// Rand yields 0,1,2,...: "r % 100 < 30" holds for 30 of 100 draws.
	f, err := Factory(config.RawMessage(`{"abort":{"status":500,"percentage":30}}`))
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{}
	stops := 0
	for i := 0; i < 100; i++ {
		in := f.NewStreamFilter(h)
		if in.OnRequestHeaders(&filtertest.Headers{}, true) == filter.Stop {
			stops++
		}
		in.OnDestroy()
	}
	if stops != 30 {
		t.Fatalf("aborted %d of 100 at 30%%", stops)
	}
}

func TestHeadersAndCluster(t *testing.T) {
	cfg := `{"abort":{"status":500,"percentage":100},"headers":[{"name":"x-fault","value":"y.*","regex":true}]}`
	if st := run(t, cfg, &filtertest.Handler{}, &filtertest.Headers{KV: [][2]string{{"X-Fault", "no"}}}); st != filter.Continue {
		t.Fatal("aborted a request whose header does not match")
	}
	if st := run(t, cfg, &filtertest.Handler{}, &filtertest.Headers{KV: [][2]string{{"X-Fault", "yes"}}}); st != filter.Stop {
		t.Fatal("did not abort a matching request")
	}
	rt, err := filtertest.Route(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{Rt: rt, Req: filtertest.Request{}}
	if st := run(t, `{"abort":{"status":500,"percentage":100},"upstream_cluster":"other"}`, h, nil); st != filter.Continue {
		t.Fatal("aborted a request for another cluster")
	}
	if st := run(t, `{"abort":{"status":500,"percentage":100},"upstream_cluster":"c1"}`, h, nil); st != filter.Stop {
		t.Fatal("did not abort a request for its cluster")
	}
}

func TestPerRouteOverride(t *testing.T) {
	rt, err := filtertest.Route(map[string]string{"fault": `{"abort":{"status":429,"percentage":100}}`})
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{Rt: rt, Req: filtertest.Request{}}
	if st := run(t, `{"abort":{"status":500,"percentage":0}}`, h, nil); st != filter.Stop || h.Status != 429 {
		t.Fatalf("route override: %v %d", st, h.Status)
	}
}

func TestBadConfig(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"abort":{"status":99,"percentage":10}}`:   "abort.status",
		`{"abort":{"status":500,"percentage":101}}`: "abort.percentage",
		`{"delay":{"percentage":10}}`:               "delay.fixed_delay",
		`{"headers":[{"value":"x"}]}`:               "headers[0].name",
	} {
		if _, err := Factory(config.RawMessage(cfg)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", cfg, err, want)
		}
	}
}
