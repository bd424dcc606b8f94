package zktest

import (
	"errors"
	"net"
	"testing"
)

// TestRunReportsPortTaken: a ZooKeeper whose port another socket holds exits, and run
// says so with errPortTaken, on which Start picks another port.
func TestRunReportsPortTaken(t *testing.T) {
	cp, err := Classpath()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	s := &Server{t: t, cp: cp, Addr: ln.Addr().String(), port: port}
	defer s.Stop()
	if err := s.run(t); !errors.Is(err, errPortTaken) {
		t.Fatalf("run on a taken port: %v; want errPortTaken", err)
	}
}
