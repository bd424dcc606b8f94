package dubbo

import (
	"slices"
	"sync"
)

// backend is one registry: ZooKeeper at an address, or the embedded one.
type backend interface {
	// Register writes u and keeps it until Unregister or Close (ZooKeeper: an ephemeral node,
	// written again after a session loss). Registering the same URL twice is a no-op.
	Register(u *URL) error
	// Unregister removes u; removing what is not there is a no-op.
	Unregister(u *URL) error
	// Watch returns the provider URLs of iface, then calls notify with the full list after
	// every change, from a goroutine of its own, until stop is called (stop does not wait
	// for a notify in progress).
	Watch(iface string, notify func([]*URL)) (initial []*URL, stop func(), err error)
	// Close stops the watches and releases the backend; what it registered goes away.
	Close()
}

// category is the registry category a URL is filed under.
func category(u *URL) string {
	if u.Protocol == "consumer" || u.Params["side"] == "consumer" {
		return "consumers"
	}
	return "providers"
}

// local is the embedded registry: the same contract as ZooKeeper inside one process.
type local struct {
	mu       sync.Mutex
	nodes    map[string]map[string]*URL // "interface/category" → node name → URL
	watchers map[string]map[*localWatch]struct{}
	wg       sync.WaitGroup
}

type localWatch struct {
	iface    string
	notify   func([]*URL)
	kick     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newLocal() *local {
	return &local{nodes: map[string]map[string]*URL{}, watchers: map[string]map[*localWatch]struct{}{}}
}

func (l *local) Register(u *URL) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := u.Interface() + "/" + category(u)
	m := l.nodes[k]
	if m == nil {
		m = map[string]*URL{}
		l.nodes[k] = m
	}
	name := u.NodeName()
	if _, ok := m[name]; ok {
		return nil
	}
	m[name] = u
	l.changedLocked(u)
	return nil
}

func (l *local) Unregister(u *URL) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := u.Interface() + "/" + category(u)
	name := u.NodeName()
	if _, ok := l.nodes[k][name]; !ok {
		return nil
	}
	delete(l.nodes[k], name)
	if len(l.nodes[k]) == 0 {
		delete(l.nodes, k)
	}
	l.changedLocked(u)
	return nil
}

// changedLocked wakes the watchers of u's interface when u is a provider.
func (l *local) changedLocked(u *URL) {
	if category(u) != "providers" {
		return
	}
	for w := range l.watchers[u.Interface()] {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// providersLocked lists the providers of iface in node-name order.
func (l *local) providersLocked(iface string) []*URL {
	m := l.nodes[iface+"/providers"]
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*URL, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out
}

func (l *local) Watch(iface string, notify func([]*URL)) ([]*URL, func(), error) {
	w := &localWatch{iface: iface, notify: notify, kick: make(chan struct{}, 1), done: make(chan struct{})}
	l.mu.Lock()
	if l.watchers[iface] == nil {
		l.watchers[iface] = map[*localWatch]struct{}{}
	}
	l.watchers[iface][w] = struct{}{}
	initial := l.providersLocked(iface)
	l.mu.Unlock()
	l.wg.Add(1)
	go l.run(w, initial)
	return initial, func() { l.stop(w) }, nil
}

func (l *local) run(w *localWatch, last []*URL) {
	defer l.wg.Done()
	for {
		select {
		case <-w.done:
			return
		case <-w.kick:
		}
		l.mu.Lock()
		cur := l.providersLocked(w.iface)
		l.mu.Unlock()
		if sameURLs(cur, last) {
			continue
		}
		last = cur
		w.notify(cur)
	}
}

func (l *local) stop(w *localWatch) {
	w.stopOnce.Do(func() {
		l.mu.Lock()
		delete(l.watchers[w.iface], w)
		if len(l.watchers[w.iface]) == 0 {
			delete(l.watchers, w.iface)
		}
		l.mu.Unlock()
		close(w.done)
	})
}

func (l *local) Close() {
	l.mu.Lock()
	var all []*localWatch
	for _, ws := range l.watchers {
		for w := range ws {
			all = append(all, w)
		}
	}
	l.mu.Unlock()
	for _, w := range all {
		l.stop(w)
	}
	l.wg.Wait()
}

// sameURLs reports whether two lists hold the same URLs in the same order.
func sameURLs(a, b []*URL) bool {
	return slices.EqualFunc(a, b, func(x, y *URL) bool { return x.String() == y.String() })
}
