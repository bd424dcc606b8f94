//go:build !unix

package tcpproxy

import (
	"context"
	"net"
)

// leaveWatch is not available here: a session notices a client that left while it waited
// for a host only when the wait ends.
type leaveWatch struct{}

func watchLeave(ctx context.Context, _ net.Conn) (context.Context, *leaveWatch) { return ctx, nil }

func (w *leaveWatch) stop() (bool, []byte) { return false, nil }
