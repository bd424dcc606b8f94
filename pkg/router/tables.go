package router

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Tables is the set of route tables by name. Readers (every request) only load an atomic
// pointer to an immutable map; writers (reload, xDS RDS, the dubbo registry) serialize on a
// mutex and publish a new map. The zero value is an empty set ready to use; do not copy it.
type Tables struct {
	mu sync.Mutex // serializes writers
	m  atomic.Pointer[map[string]*Table]
}

// Build compiles every configuration, all or nothing: the first error is returned and no
// table is. Names must be unique.
func Build(cfgs []config.RouterCfg) (map[string]*Table, error) {
	out := make(map[string]*Table, len(cfgs))
	for i := range cfgs {
		name := cfgs[i].RouterConfigName
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("router %q: routers[%d]: router_config_name used twice", name, i)
		}
		t, err := New(cfgs[i])
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// Get returns the table called name. It takes no lock.
func (ts *Tables) Get(name string) (*Table, bool) {
	m := ts.m.Load()
	if m == nil {
		return nil, false
	}
	t, ok := (*m)[name]
	return t, ok
}

// Names returns the table names, in no particular order.
func (ts *Tables) Names() []string {
	m := ts.m.Load()
	if m == nil {
		return nil
	}
	names := make([]string, 0, len(*m))
	for n := range *m {
		names = append(names, n)
	}
	return names
}

// Replace publishes a new set of tables (a copy of m) in place of all the old ones.
func (ts *Tables) Replace(m map[string]*Table) {
	next := maps.Clone(m)
	if next == nil {
		next = map[string]*Table{}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.m.Store(&next)
}

// Set adds or replaces the table named t.Name(), keeping the others.
func (ts *Tables) Set(t *Table) {
	ts.update(func(m map[string]*Table) { m[t.Name()] = t })
}

// Delete removes the table called name, if present.
func (ts *Tables) Delete(name string) {
	ts.update(func(m map[string]*Table) { delete(m, name) })
}

func (ts *Tables) update(f func(map[string]*Table)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var next map[string]*Table
	if cur := ts.m.Load(); cur != nil {
		next = maps.Clone(*cur)
	}
	if next == nil {
		next = map[string]*Table{}
	}
	f(next)
	ts.m.Store(&next)
}

// Held looks a router up by name and can hold on to the table it has: a server whose
// listener a config change replaced drains, and the change may drop the router it names
// while its connections still carry requests. Once Hold ran, those are routed by the table
// it held when the router is gone. The zero Held holds nothing.
type Held struct{ held atomic.Pointer[Table] }

// Hold keeps the table ts names name now, if any (the first Hold wins).
func (h *Held) Hold(ts *Tables, name string) {
	if t, ok := ts.Get(name); ok {
		h.held.CompareAndSwap(nil, t)
	}
}

// Get returns ts's table name, or when there is none the table held.
func (h *Held) Get(ts *Tables, name string) (*Table, bool) {
	if t, ok := ts.Get(name); ok {
		return t, true
	}
	if t := h.held.Load(); t != nil {
		return t, true
	}
	return nil, false
}
