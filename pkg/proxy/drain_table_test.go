package proxy

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

// TestDrainingKeepsItsTable: a proxy told to go away (its listener was replaced by a
// config change and drains) whose router the change then removed matches the requests
// its connections still carry in the table it had when the drain began, rather than
// answering them "no route"; one not draining has no table once its router is gone, and
// a router of the same name put back is used at once, draining or not.
func TestDrainingKeepsItsTable(t *testing.T) {
	build := func(body string) map[string]*router.Table {
		t.Helper()
		var rc config.RouterCfg
		if err := config.Unmarshal([]byte(`{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],
			"routers":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":"`+body+`"}}]}]}`), &rc); err != nil {
			t.Fatal(err)
		}
		m, err := router.Build([]config.RouterCfg{rc})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tables := new(router.Tables)
	old := build("old")
	tables.Replace(old)
	p := New(Config{Routers: tables, RouterName: "r"})
	defer p.Close()

	tables.Replace(nil)
	if _, ok := p.table(); ok {
		t.Fatal("a proxy that is not draining still has a table once its router is gone")
	}
	tables.Replace(old)
	p.GoAway()
	tables.Replace(nil)
	if got, ok := p.table(); !ok || got != old["r"] {
		t.Fatalf("draining, router gone: table %p, %v; want the one it had (%p)", got, ok, old["r"])
	}
	next := build("new")
	tables.Replace(next)
	if got, ok := p.table(); !ok || got != next["r"] {
		t.Fatalf("draining, router put back: table %p, %v; want the new one (%p)", got, ok, next["r"])
	}
}
