//go:build !linux

package network

import "net"

// Peer is PeerOpen where the socket cannot be looked at without reading it.
func Peer(c net.Conn) PeerState { return PeerOpen }

func inputPending(int) bool  { return false }
func outputPending(int) bool { return false }

func unacked(int) (int, bool) { return 0, false }
