package udpproxy

// SocketDrops exposes socketDrops to the package's tests.
var SocketDrops = socketDrops
