//go:build !linux

package evloop

import "go.uber.org/zap"

// Supported reports whether this platform has event loops.
const Supported = false

// Group is a set of loops; NewGroup always fails here.
type Group struct{}

// NewGroup fails with ErrUnsupported: event loops need epoll.
func NewGroup(int, *zap.Logger) (*Group, error) { return nil, ErrUnsupported }

// Loops returns nothing.
func (g *Group) Loops() []*Loop { return nil }

// Close does nothing.
func (g *Group) Close() {}

// Loop is an event loop; there are none here.
type Loop struct{ Buf []byte }

// ID is 0.
func (l *Loop) ID() int { return 0 }

// Post drops f.
func (l *Loop) Post(func()) bool { return false }
