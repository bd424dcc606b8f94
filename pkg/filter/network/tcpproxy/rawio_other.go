//go:build !unix

package tcpproxy

// setupRaw: without unix sockets read falls back to blocking reads into a pooled buffer.
func (h *half) setupRaw() {}
