package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// clientTLS runs the TLS client handshake over a new upstream connection, within what is
// left of connect_timeout (ctx still cancels it). Without a configured server_name the
// host's name (or IP) is verified. On failure conn is closed.
func clientTLS(ctx context.Context, conn net.Conn, cfg *tls.Config, h *Host, deadline time.Time) (net.Conn, error) {
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		if host, _, err := net.SplitHostPort(h.addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(conn, cfg)
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	err := tc.Handshake()
	stop()
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s: tls handshake: %w", h.addr, err)
	}
	return tc, nil
}
