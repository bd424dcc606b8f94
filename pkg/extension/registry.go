// Package extension holds the generic registry of named factories (protocols, filters,
// load balancers). Registries are values filled by one explicit list of built-ins
// (pkg/extension/builtin), never by init(), so a test can build its own set.
package extension

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknown is wrapped by Get for a name nobody registered.
var ErrUnknown = errors.New("unknown")

// Registry maps names to factories of one kind, remembering registration order.
// It is filled before the server starts and read-only afterwards, so it needs no lock.
type Registry[F any] struct {
	kind   string
	order  []string
	byName map[string]F
}

// NewRegistry returns an empty registry; kind names it in errors ("network filter").
func NewRegistry[F any](kind string) *Registry[F] {
	return &Registry[F]{kind: kind, byName: map[string]F{}}
}

// Register adds f under name. An empty or duplicate name is an error.
func (r *Registry[F]) Register(name string, f F) error {
	if name == "" {
		return fmt.Errorf("%s: empty name", r.kind)
	}
	if _, dup := r.byName[name]; dup {
		return fmt.Errorf("%s %q: already registered", r.kind, name)
	}
	r.byName[name] = f
	r.order = append(r.order, name)
	return nil
}

// Get returns the factory registered under name, or an error naming the known ones.
func (r *Registry[F]) Get(name string) (F, error) {
	f, ok := r.byName[name]
	if !ok {
		return f, fmt.Errorf("%s %q: %w (known: %s)", r.kind, name, ErrUnknown, strings.Join(r.order, ", "))
	}
	return f, nil
}

// Names lists the registered names in registration order.
func (r *Registry[F]) Names() []string { return append([]string(nil), r.order...) }
