package benchproc

import "syscall"

// deathSignal makes the kernel send SIGTERM to a child when this process dies.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
