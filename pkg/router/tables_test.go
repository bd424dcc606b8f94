package router_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

func cfgFor(name, cluster string) config.RouterCfg {
	var c config.RouterCfg
	js := fmt.Sprintf(`{"router_config_name":%q,"virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"match":{"prefix":"/"},"route":{"cluster_name":%q}}]}]}`, name, cluster)
	if err := config.Unmarshal([]byte(js), &c); err != nil {
		panic(err)
	}
	return c
}

func TestTables(t *testing.T) {
	t.Parallel()
	var ts router.Tables
	if _, ok := ts.Get("a"); ok || ts.Names() != nil {
		t.Fatal("zero Tables is not empty")
	}
	m, err := router.Build([]config.RouterCfg{cfgFor("a", "ca"), cfgFor("b", "cb")})
	if err != nil {
		t.Fatal(err)
	}
	ts.Replace(m)
	delete(m, "a") // Replace copied the map
	if tb, ok := ts.Get("a"); !ok || tb.Name() != "a" {
		t.Fatalf("Get(a) = %v, %v", tb, ok)
	}
	c, _ := router.New(cfgFor("c", "cc"))
	ts.Set(c)
	ts.Delete("b")
	ts.Delete("missing")
	names := ts.Names()
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Errorf("Names = %v; want [a c]", names)
	}
	ts.Replace(nil)
	if len(ts.Names()) != 0 {
		t.Errorf("Replace(nil) left %v", ts.Names())
	}
	var fresh router.Tables
	fresh.Set(c)
	if _, ok := fresh.Get("c"); !ok {
		t.Errorf("Set on a zero Tables lost the table")
	}
}

func TestBuildAllOrNothing(t *testing.T) {
	t.Parallel()
	bad := cfgFor("bad", "x")
	bad.VirtualHosts[0].Routers[0].Match.Regex = "("
	for _, tc := range []struct {
		cfgs []config.RouterCfg
		want string
	}{
		{[]config.RouterCfg{cfgFor("a", "x"), bad}, `router "bad"`},
		{[]config.RouterCfg{cfgFor("a", "x"), cfgFor("a", "y")}, "router_config_name used twice"},
	} {
		m, err := router.Build(tc.cfgs)
		if err == nil || m != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build = %v, %v; want nil and an error containing %q", m, err, tc.want)
		}
	}
}

// Readers Get and Match while writers swap tables; run under -race.
func TestTablesConcurrentReplace(t *testing.T) {
	t.Parallel()
	var ts router.Tables
	gens := make([]map[string]*router.Table, 4)
	for g := range gens {
		m, err := router.Build([]config.RouterCfg{cfgFor("r", fmt.Sprintf("gen%d", g)), cfgFor(fmt.Sprintf("only%d", g), "x")})
		if err != nil {
			t.Fatal(err)
		}
		gens[g] = m
	}
	ts.Replace(gens[0])
	var readers, writers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		readers.Go(func() {
			r := httpReq("h", "/")
			for {
				select {
				case <-stop:
					return
				default:
				}
				tb, ok := ts.Get("r")
				if !ok {
					errs <- fmt.Errorf("table r missing during swaps")
					return
				}
				rt, ok := tb.Match(r)
				if !ok || !strings.HasPrefix(rt.ClusterFor(r, 0), "gen") {
					errs <- fmt.Errorf("bad match during swaps: %v", rt)
					return
				}
			}
		})
	}
	for g := range 2 {
		writers.Go(func() {
			for i := range 500 {
				switch i % 3 {
				case 0:
					ts.Replace(gens[(i+g)%len(gens)])
				case 1:
					tb, err := router.New(cfgFor("r", fmt.Sprintf("gen%d", g)))
					if err != nil {
						panic(err)
					}
					ts.Set(tb)
				default:
					ts.Delete(fmt.Sprintf("only%d", i%4))
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
