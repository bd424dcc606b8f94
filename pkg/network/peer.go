package network

// PeerState is what a look at a connection's socket, without reading from it or
// waiting, tells of its peer (Peer).
type PeerState uint8

const (
	// PeerOpen: nothing says the peer left, or the look is not possible here (not
	// Linux, not a socket).
	PeerOpen PeerState = iota
	// PeerClosed: the peer's FIN arrived. It closed the connection, or shut down its
	// writing side; the socket cannot tell the two apart.
	PeerClosed
	// PeerReset: the connection was reset, or failed.
	PeerReset
)

func (s PeerState) String() string {
	switch s {
	case PeerClosed:
		return "closed"
	case PeerReset:
		return "reset"
	}
	return "open"
}
