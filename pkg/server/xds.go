package server

import (
	"context"
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/xds"
)

// xds.go wires the xDS client (pkg/xds) into the server: New calls initXDS, which reads
// dynamic_resources and, when it names an ADS control plane, builds the client (taking the
// readiness hold "xds" before Run can report ready); Run calls runXDS in its background group,
// so the client stops with the server.

// xdsClients holds each server's client between New and Run.
var xdsClients sync.Map // *Server → *xds.Client

// initXDS builds the xDS client when the config has dynamic_resources with an ads_config.
func (s *Server) initXDS() error {
	b, err := xds.ParseBootstrap(s.cfg)
	if err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	node := s.opts.ServiceNode
	if node == "" {
		host, _ := os.Hostname()
		node = "mosnlite~" + host
		s.log.Warn("xds: no --service-node (MOSNLITE_SERVICE_NODE); using a node id from the host name", zap.String("node", node))
	}
	c, err := xds.New(b, s, xds.Options{
		NodeID:      node,
		NodeCluster: s.opts.ServiceCluster,
		Log:         s.log.Named("xds"),
		Metrics:     s.metrics,
	})
	if err != nil {
		return fmt.Errorf("dynamic_resources: %w", err)
	}
	xdsClients.Store(s, c)
	return nil
}

// runXDS runs the server's xDS client, if any, until ctx ends.
func (s *Server) runXDS(ctx context.Context) error {
	v, ok := xdsClients.LoadAndDelete(s)
	if !ok {
		return nil
	}
	return v.(*xds.Client).Run(ctx)
}

var _ xds.Target = (*Server)(nil)
