package xprotocol

import (
	"errors"
	"fmt"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// CheckStatus verifies that codec's local replies carry the statuses m gives: for each
// cause it writes the codec's hijack answer to a request (as the engine does) and decodes
// the status back. The proxy filter runs it when it builds an engine, so a codec that
// does not answer as its protocol's registration says is refused at start.
func CheckStatus(codec xprotocol.Codec, m stream.StatusMap) error {
	pool := buffer.NewPool()
	var errs []error
	for _, c := range stream.Causes {
		req := xprotocol.Frame{Kind: xprotocol.KindRequest, ID: 7}
		b := pool.NewBuffer(128)
		if err := codec.Hijack(b, &req, stream.RPCCause(c), msgOf(stream.RPCCause(c))); err != nil {
			errs = append(errs, fmt.Errorf("%s: hijack for %s: %w", codec.Name(), c, err))
			continue
		}
		var f xprotocol.Frame
		n, err := codec.Decode(b.Bytes(), &f)
		b.Release()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: decode the hijack answer for %s: %w", codec.Name(), c, err))
		case n == 0 || f.Kind != xprotocol.KindResponse:
			errs = append(errs, fmt.Errorf("%s: the hijack answer for %s is not a whole response frame", codec.Name(), c))
		case int(f.Status) != m(c):
			errs = append(errs, fmt.Errorf("%s: the codec answers %s with status %d, the protocol's registration maps it to %d",
				codec.Name(), c, f.Status, m(c)))
		}
	}
	return errors.Join(errs...)
}
