package testutil

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2Refuser is an HTTP/2 upstream (a raw framer on each connection) that processes no
// request: it answers each stream with RST_STREAM(REFUSED_STREAM), or (goaway) with a
// graceful GOAWAY naming no stream. With after > 0 it reads a stream's body, granting
// flow control as it goes, and refuses the stream once more than after bytes came in.
type H2Refuser struct {
	*TCPServer
	goaway  bool
	after   int
	Streams atomic.Int64 // streams opened on it
}

// StartH2Refuser starts an H2Refuser on 127.0.0.1 until cleanup.
func StartH2Refuser(t testing.TB, goaway bool, after int) *H2Refuser {
	t.Helper()
	rf := &H2Refuser{goaway: goaway, after: after}
	rf.TCPServer = StartTCP(t, func(c *net.TCPConn) { rf.serve(c) })
	return rf
}

func (rf *H2Refuser) serve(c net.Conn) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	got := map[uint32]int{} // body bytes per stream still read
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			rf.Streams.Add(1)
			switch {
			case rf.goaway:
				err = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			case rf.after > 0 && !f.StreamEnded():
				got[f.StreamID] = 0
			default:
				err = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			}
		case *http2.DataFrame:
			n := int(f.Length)
			if n > 0 {
				err = fr.WriteWindowUpdate(0, uint32(n))
			}
			k, reading := got[f.StreamID]
			if !reading || err != nil {
				break
			}
			k += n
			got[f.StreamID] = k
			if k > rf.after || f.StreamEnded() {
				delete(got, f.StreamID)
				err = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			} else if n > 0 {
				err = fr.WriteWindowUpdate(f.StreamID, uint32(n))
			}
		}
		if err != nil {
			return
		}
	}
}
