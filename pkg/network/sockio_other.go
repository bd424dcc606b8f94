//go:build !linux

package network

import "net"

// sockIO is empty where raw calls are not made: a SockIO uses the connection's own Read
// and Write.
type sockIO struct{}

func (s *SockIO) init(net.Conn) {}

func (s *SockIO) raw() bool { return false }

// Read reads from the connection.
func (s *SockIO) Read(p []byte) (int, error) { return s.c.Read(p) }

// Write writes to the connection.
func (s *SockIO) Write(p []byte) (int, error) { return s.c.Write(p) }

func (s *SockIO) writev([][]byte) (int64, error) { panic("unreachable") }

func (s *SockIO) tryWritev([][]byte) (int64, bool, error) { panic("unreachable") }

func (s *SockIO) unacked() (int, bool) { return 0, false }
