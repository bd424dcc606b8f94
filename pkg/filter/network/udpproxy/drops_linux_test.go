package udpproxy_test

import (
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter/network/udpproxy"
)

// TestSocketDrops: a socket with a small receive buffer that is not read drops most of a
// burst, and SocketDrops reports exactly what was neither queued nor read.
func TestSocketDrops(t *testing.T) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if d, ok := udpproxy.SocketDrops(rx); !ok || d != 0 {
		t.Fatalf("fresh socket: %d, %v; want 0, true", d, ok)
	}
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const sent = 200
	for range sent {
		if _, err := tx.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	queued := 0
	buf := make([]byte, 2048)
	for {
		_ = rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := rx.Read(buf); err != nil {
			break
		}
		queued++
	}
	d, ok := udpproxy.SocketDrops(rx)
	if !ok || int(d) != sent-queued || d == 0 {
		t.Fatalf("SocketDrops = %d, %v; sent %d, %d were queued: want %d dropped", d, ok, sent, queued, sent-queued)
	}
	rx.Close()
	if _, ok := udpproxy.SocketDrops(rx); ok {
		t.Fatal("SocketDrops on a closed socket reported a count")
	}
}
