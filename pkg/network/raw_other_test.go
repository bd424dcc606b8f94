//go:build !linux

package network

import "testing"

// loopConfig skips the test: event loops are Linux's (raw_linux_test.go has the real one).
func loopConfig(t *testing.T, _ string, _ int) (ListenerConfig, any) {
	t.Skip("no event loops on this platform")
	return ListenerConfig{}, nil
}
