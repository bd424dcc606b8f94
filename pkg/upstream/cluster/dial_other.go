//go:build !linux

package cluster

import "syscall"

const canDialNoPort = false

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
