package ipaccess

import (
	"net/netip"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/filtertest"
)

func decide(t *testing.T, cfg, remote string, hs *filtertest.Headers) (filter.Status, int) {
	t.Helper()
	f, err := Factory(config.RawMessage(cfg))
	if err != nil {
		t.Fatal(err)
	}
	h := &filtertest.Handler{Remote: netip.MustParseAddrPort(remote)}
	in := f.NewStreamFilter(h)
	defer in.OnDestroy()
	if hs == nil {
		hs = &filtertest.Headers{}
	}
	return in.OnRequestHeaders(hs, true), h.Status
}

func TestMOSNForm(t *testing.T) {
	cfg := `{"default_action":"allow","ips":[{"action":"allow","addrs":["10.1.0.0/16"]},{"action":"deny","addrs":["10.0.0.0/8","127.0.0.1"]}]}`
	for remote, want := range map[string]filter.Status{
		"127.0.0.1:1":          filter.Stop,
		"[::ffff:127.0.0.1]:1": filter.Stop, // v4-mapped peer
		"10.2.3.4:1":           filter.Stop,
		"10.1.3.4:1":           filter.Continue, // first entry wins
		"192.168.1.1:1":        filter.Continue, // default
	} {
		st, code := decide(t, cfg, remote, nil)
		if st != want || (st == filter.Stop && code != 403) {
			t.Errorf("%s: %v %d, want %v", remote, st, code, want)
		}
	}
	if st, _ := decide(t, `{"default_action":"deny","ips":[{"action":"allow","addrs":["::1"]}]}`, "[::1]:5", nil); st != filter.Continue {
		t.Error("allowlisted v6 address denied")
	}
	if st, _ := decide(t, `{"default_action":"deny"}`, "[::1]:5", nil); st != filter.Stop {
		t.Error("default deny allowed")
	}
}

func TestShortFormAndHeader(t *testing.T) {
	if st, _ := decide(t, `{"allow":false,"ips":["127.0.0.0/8"]}`, "127.0.0.1:9", nil); st != filter.Stop {
		t.Error("short form deny list allowed a listed address")
	}
	if st, _ := decide(t, `{"allow":true,"ips":["127.0.0.0/8"]}`, "10.0.0.1:9", nil); st != filter.Stop {
		t.Error("short form allow list allowed an unlisted address")
	}
	hs := &filtertest.Headers{KV: [][2]string{{"X-Real-IP", "10.9.9.9, 127.0.0.1"}}}
	if st, _ := decide(t, `{"header":"x-real-ip","ips":[{"action":"deny","addrs":["10.9.9.9"]}]}`, "127.0.0.1:9", hs); st != filter.Stop {
		t.Error("header address not used")
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []string{
		`{"default_action":"maybe"}`,
		`{"ips":[{"action":"drop","addrs":["1.2.3.4"]}]}`,
		`{"ips":[{"action":"deny","addrs":["nope"]}]}`,
		`{"ips":["1.2.3.4/99"]}`,
	} {
		if _, err := Factory(config.RawMessage(cfg)); err == nil {
			t.Errorf("%s accepted", cfg)
		}
	}
}
