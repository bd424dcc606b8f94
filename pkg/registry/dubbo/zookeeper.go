package dubbo

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"
)

// RootPath is the root Dubbo files services under in ZooKeeper (its default registry group).
const RootPath = "/dubbo"

// ServicePath is the node of an interface: /dubbo/<url-encoded interface>.
func ServicePath(iface string) string { return RootPath + "/" + encodeComponent(iface) }

// NodePath is where u lives: /dubbo/<interface>/<providers|consumers>/<url-encoded URL>.
func NodePath(u *URL) string {
	return ServicePath(u.Interface()) + "/" + category(u) + "/" + u.NodeName()
}

// zkBackend registers and watches in ZooKeeper with one session. Provider and consumer
// nodes are ephemeral, their parents persistent, as Dubbo writes them. After a session loss
// the client opens a new session and every node registered here is written again; watches
// are set again and report the list as it is then.
type zkBackend struct {
	addr           string
	log            *zap.Logger
	sessionTimeout time.Duration

	connMu sync.Mutex
	conn   *zk.Conn // replaced by renew
	events <-chan zk.Event

	mu    sync.Mutex
	nodes map[string][]byte // ephemeral nodes to keep: path → data
	gone  map[string]bool   // nodes unregistered without a session: deleted on the next one

	session chan struct{} // kicked on every new or resumed session
	quit    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
}

var (
	errClosed       = errors.New("registry closed")
	errNotConnected = errors.New("not connected")
)

// zkLogger sends the client library's messages (only problems: info logs are off) to zap.
type zkLogger struct{ l *zap.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Warn("zookeeper client: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// dialZooKeeper connects to addr (a comma list of host:port) and waits up to timeout for a
// session.
func dialZooKeeper(addr string, timeout, sessionTimeout time.Duration, log *zap.Logger) (*zkBackend, error) {
	z := &zkBackend{
		addr:           addr,
		log:            log,
		sessionTimeout: sessionTimeout,
		nodes:          map[string][]byte{},
		gone:           map[string]bool{},
		session:        make(chan struct{}, 1),
		quit:           make(chan struct{}),
	}
	conn, events, err := z.connect()
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %w", addr, err)
	}
	z.conn, z.events = conn, events
	t := time.NewTimer(timeout)
	defer t.Stop()
	for conn.State() != zk.StateHasSession {
		select {
		case <-z.session:
		case <-t.C:
			closeConn(conn, events)
			return nil, fmt.Errorf("zookeeper %s: no session within %s", addr, timeout)
		}
	}
	z.wg.Add(2)
	go z.keepNodes()
	go z.watchdog()
	return z, nil
}

// connect starts a client; its session events kick z.session.
func (z *zkBackend) connect() (*zk.Conn, <-chan zk.Event, error) {
	return zk.Connect(strings.Split(z.addr, ","), z.sessionTimeout,
		zk.WithLogger(zkLogger{z.log}), zk.WithLogInfo(false),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				select {
				case z.session <- struct{}{}:
				default:
				}
			}
		}))
}

// c is the current client.
func (z *zkBackend) c() *zk.Conn {
	z.connMu.Lock()
	defer z.connMu.Unlock()
	return z.conn
}

// renew replaces a client that has had no session for longer than the session timeout.
// ZooKeeper has expired that session by then, or lost it with its data; and a server that
// lost its data closes every connection of a client that has seen a later zxid than its
// own, so the old client would never get a session. The new client's session event
// writes the nodes again; the watches, ended by the old client's close, set themselves
// again on the new one.
func (z *zkBackend) renew() {
	conn, events, err := z.connect()
	if err != nil {
		z.log.Warn("dubbo registry: cannot start a new zookeeper client", zap.String("registry", z.addr), zap.Error(err))
		return
	}
	z.connMu.Lock()
	select {
	case <-z.quit:
		z.connMu.Unlock()
		closeConn(conn, events)
		return
	default:
	}
	old, oldEvents := z.conn, z.events
	z.conn, z.events = conn, events
	z.connMu.Unlock()
	z.log.Warn("dubbo registry: no zookeeper session for longer than the session timeout; starting a new one",
		zap.String("registry", z.addr), zap.Duration("session_timeout", z.sessionTimeout))
	closeConn(old, oldEvents)
}

// watchdog renews the client when it has had no session for longer than the session
// timeout. (Not in keepNodes: its requests wait while the client has no session.)
func (z *zkBackend) watchdog() {
	defer z.wg.Done()
	check := time.NewTicker(max(z.sessionTimeout/4, 100*time.Millisecond))
	defer check.Stop()
	var noSession time.Time // when the client was first seen without a session
	for {
		select {
		case <-z.quit:
			return
		case <-check.C:
		}
		switch {
		case z.c().State() == zk.StateHasSession:
			noSession = time.Time{}
		case noSession.IsZero():
			noSession = time.Now()
		case time.Since(noSession) > z.sessionTimeout:
			z.renew()
			noSession = time.Time{}
		}
	}
}

// keepNodes writes the registered nodes again whenever a session starts (a new session has
// lost them; a resumed one still has them, and the write is a no-op).
func (z *zkBackend) keepNodes() {
	defer z.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-z.quit:
			return
		case <-z.session:
		case <-retry.C:
		}
		failed := z.deleteGone()
		z.mu.Lock()
		paths := make([]string, 0, len(z.nodes))
		for p := range z.nodes {
			paths = append(paths, p)
		}
		z.mu.Unlock()
		slices.Sort(paths)
		for _, p := range paths {
			z.mu.Lock()
			data, ok := z.nodes[p]
			z.mu.Unlock()
			if !ok {
				continue
			}
			if err := z.ensureEphemeral(p, data); err != nil {
				failed++
				z.log.Warn("dubbo registry: cannot write node again after a session change",
					zap.String("registry", z.addr), zap.String("node", p), zap.Error(err))
			}
		}
		if failed > 0 && z.c().State() == zk.StateHasSession {
			retry.Reset(time.Second)
		}
	}
}

// deleteGone deletes the nodes unregistered while there was no session (a resumed session
// still has them) and returns how many it could not delete. A path registered again
// meanwhile is written again after it, with the other registered nodes.
func (z *zkBackend) deleteGone() int {
	z.mu.Lock()
	paths := make([]string, 0, len(z.gone))
	for p := range z.gone {
		paths = append(paths, p)
	}
	z.mu.Unlock()
	failed := 0
	for _, p := range paths {
		if err := z.c().Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			failed++
			z.log.Warn("dubbo registry: cannot delete a node unregistered without a session",
				zap.String("registry", z.addr), zap.String("node", p), zap.Error(err))
			continue
		}
		z.mu.Lock()
		delete(z.gone, p)
		z.mu.Unlock()
	}
	return failed
}

var openACL = zk.WorldACL(zk.PermAll)

// ensurePersistent creates path and its parents as persistent nodes where missing.
func (z *zkBackend) ensurePersistent(path string) error {
	for i := 1; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		_, err := z.c().Create(path[:i], nil, 0, openACL)
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s: %w", path[:i], err)
		}
	}
	return nil
}

// ensureEphemeral makes sure path exists as an ephemeral node of this session: a node left
// by an older session of ours (not yet expired) is replaced, so it cannot vanish later.
func (z *zkBackend) ensureEphemeral(path string, data []byte) error {
	for range 3 {
		_, err := z.c().Create(path, data, zk.FlagEphemeral, openACL)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrNoNode):
			if err := z.ensurePersistent(path[:strings.LastIndexByte(path, '/')]); err != nil {
				return err
			}
		case errors.Is(err, zk.ErrNodeExists):
			ok, st, err := z.c().Exists(path)
			if err != nil {
				return err
			}
			if ok && st.EphemeralOwner == z.c().SessionID() {
				return nil
			}
			if ok {
				if err := z.c().Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) &&
					!errors.Is(err, zk.ErrBadVersion) {
					return err
				}
			}
		default:
			return err
		}
	}
	return fmt.Errorf("create %s: node keeps changing", path)
}

// connected fails fast when there is no session (requests would queue until there is).
func (z *zkBackend) connected() error {
	select {
	case <-z.quit:
		return fmt.Errorf("zookeeper %s: %w", z.addr, errClosed)
	default:
	}
	if s := z.c().State(); s != zk.StateHasSession {
		return fmt.Errorf("zookeeper %s: %w (%s)", z.addr, errNotConnected, s)
	}
	return nil
}

func (z *zkBackend) Register(u *URL) error {
	if err := z.connected(); err != nil {
		return err
	}
	path := NodePath(u)
	data := []byte(strings.Split(u.Host, ":")[0]) // Curator's default node data: the host
	z.mu.Lock()
	_, had := z.nodes[path]
	wasGone := z.gone[path]
	z.nodes[path] = data
	delete(z.gone, path)
	z.mu.Unlock()
	if err := z.ensureEphemeral(path, data); err != nil {
		if !had {
			z.mu.Lock()
			delete(z.nodes, path)
			if wasGone {
				z.gone[path] = true
			}
			z.mu.Unlock()
		}
		return fmt.Errorf("zookeeper %s: %w", z.addr, err)
	}
	return nil
}

func (z *zkBackend) Unregister(u *URL) error {
	path := NodePath(u)
	if err := z.connected(); err != nil {
		if errors.Is(err, errClosed) {
			return err
		}
		// The node goes with the session if it expires; if the session resumes, the next
		// session event deletes it.
		z.mu.Lock()
		delete(z.nodes, path)
		z.gone[path] = true
		z.mu.Unlock()
		return nil
	}
	z.mu.Lock()
	delete(z.nodes, path)
	z.mu.Unlock()
	if err := z.c().Delete(path, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zookeeper %s: delete %s: %w", z.addr, path, err)
	}
	return nil
}

// providers reads the children of dir and sets a watch on it, creating dir when missing.
func (z *zkBackend) providers(dir string) ([]*URL, <-chan zk.Event, error) {
	for range 2 {
		children, _, ch, err := z.c().ChildrenW(dir)
		if errors.Is(err, zk.ErrNoNode) {
			if err := z.ensurePersistent(dir); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		slices.Sort(children)
		urls := make([]*URL, 0, len(children))
		for _, c := range children {
			u, err := ParseNode(c)
			if err != nil {
				z.log.Debug("dubbo registry: skipping a node that is not a URL", zap.String("node", dir+"/"+c))
				continue
			}
			urls = append(urls, u)
		}
		return urls, ch, nil
	}
	return nil, nil, fmt.Errorf("%s: deleted as it was created", dir)
}

func (z *zkBackend) Watch(iface string, notify func([]*URL)) ([]*URL, func(), error) {
	if err := z.connected(); err != nil {
		return nil, nil, err
	}
	dir := ServicePath(iface) + "/providers"
	initial, ch, err := z.providers(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("zookeeper %s: watch %s: %w", z.addr, dir, err)
	}
	done := make(chan struct{})
	var once sync.Once
	z.wg.Add(1)
	go z.watch(dir, initial, ch, done, notify)
	return initial, func() { once.Do(func() { close(done) }) }, nil
}

func (z *zkBackend) watch(dir string, last []*URL, ch <-chan zk.Event, done <-chan struct{}, notify func([]*URL)) {
	defer z.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-done:
			return
		case <-z.quit:
			return
		case <-ch:
		}
		for {
			// Blocks while the client reconnects; Close ends it.
			urls, next, err := z.providers(dir)
			if err == nil {
				ch, backoff = next, 100*time.Millisecond
				if !sameURLs(urls, last) {
					last = urls
					select {
					case <-done:
						return
					default:
					}
					notify(urls)
				}
				break
			}
			select {
			case <-done:
				return
			case <-z.quit:
				return
			default:
			}
			z.log.Warn("dubbo registry: watch failed; retrying",
				zap.String("registry", z.addr), zap.String("node", dir), zap.Error(err))
			t := time.NewTimer(backoff)
			select {
			case <-done:
				t.Stop()
				return
			case <-z.quit:
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Close ends the session (ZooKeeper deletes the ephemeral nodes at once) and waits for the
// client's and the watches' goroutines.
func (z *zkBackend) Close() {
	z.closing.Do(func() {
		close(z.quit)
		z.connMu.Lock()
		conn, events := z.conn, z.events
		z.connMu.Unlock()
		closeConn(conn, events) // renew closes a client it replaces, and any made after quit
		z.wg.Wait()
	})
}

func closeConn(conn *zk.Conn, events <-chan zk.Event) {
	conn.Close()
	for range events { // closed when the client's goroutines have ended
	}
}
