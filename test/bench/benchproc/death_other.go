//go:build !linux

package benchproc

import "syscall"

// deathSignal is nil here: only Linux can tie a child's life to its parent's; the load
// harnesses are run on Linux (they pin CPUs with taskset).
func deathSignal() *syscall.SysProcAttr { return nil }
