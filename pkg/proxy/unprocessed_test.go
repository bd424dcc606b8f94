package proxy

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ClientConn API is deprecated in favour of net/http, which has no per-connection RoundTrip.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestUnprocessedMatchesXNet pins the x/net errors unprocessed matches by their text: a
// server that answers a stream with a graceful GOAWAY naming no stream makes x/net's
// RoundTrip fail with errClientConnGotGoAway, the next RoundTrip on that connection with
// errClientConnUnusable, and a stream the server refuses with REFUSED_STREAM. A stream
// reset with another code was processed, or may have been.
func TestUnprocessedMatchesXNet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(fr *http2.Framer, id uint32) error
		want  bool
		again bool // a second RoundTrip on the same connection
	}{
		{"goaway", func(fr *http2.Framer, id uint32) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) }, true, true},
		{"refused", func(fr *http2.Framer, id uint32) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }, true, false},
		{"internal", func(fr *http2.Framer, id uint32) error { return fr.WriteRSTStream(id, http2.ErrCodeInternal) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() { done <- framerServe(ln, tc.serve) }()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			cc, err := (&http2.Transport{}).NewClientConn(c)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
			_, err = cc.RoundTrip(req)
			if err == nil || unprocessed(err) != tc.want {
				t.Fatalf("first RoundTrip: %v; unprocessed %v, want %v", err, unprocessed(err), tc.want)
			}
			if tc.again {
				req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
				if _, err = cc.RoundTrip(req); err == nil || !unprocessed(err) {
					t.Fatalf("second RoundTrip: %v; want an unprocessed error", err)
				}
			}
			_ = c.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	if unprocessed(nil) || unprocessed(io.EOF) {
		t.Fatal("nil or EOF taken for unprocessed")
	}
}

// framerServe accepts one connection, exchanges SETTINGS, and calls answer for the first
// stream the client opens; it returns when the client leaves.
func framerServe(ln net.Listener, answer func(fr *http2.Framer, id uint32) error) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return errors.New("no client preface")
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	answered := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil // the client left
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.MetaHeadersFrame:
			if !answered {
				answered = true
				if err := answer(fr, f.StreamID); err != nil {
					return err
				}
			}
		}
	}
}
