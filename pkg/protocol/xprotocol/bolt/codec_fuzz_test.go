package bolt_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the named seeds in testdata/fuzz/FuzzDecode")

// FuzzDecode: Decode never panics and consumes 0..len(b) bytes; a decoded frame is
// self-delimiting (every proper prefix waits), re-encodes byte-identical from Raw and
// equal from its fields, survives SetID (CRC included), and the replies built for it decode.
// Seeds: testdata/fuzz/FuzzDecode (test vector, captured frames, every frame shape).
func FuzzDecode(f *testing.F) {
	c := bolt.New(bolt.Options{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr xprotocol.Frame
		n, err := c.Decode(b, &fr)
		if n < 0 || n > len(b) {
			t.Fatalf("Decode consumed %d of %d bytes", n, len(b))
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("Decode = %d with error %v", n, err)
			}
			return
		}
		if n == 0 {
			return
		}
		raw := b[:n]
		var tmp xprotocol.Frame
		if n2, err := c.Decode(raw[:n-1], &tmp); n2 != 0 || err != nil {
			t.Fatalf("prefix of a frame: Decode = %d, %v", n2, err)
		}
		// Raw write.
		var out buffer.IoBuffer
		if err := c.Encode(&out, &fr); err != nil || !bytes.Equal(out.Bytes(), raw) {
			t.Fatalf("Encode(Decode(b)) = % x, %v", out.Bytes(), err)
		}
		var fr2 xprotocol.Frame
		if n2, err := c.Decode(out.Bytes(), &fr2); n2 != n || err != nil || !equalFrame(&fr, &fr2) || fr.Proto != fr2.Proto {
			t.Fatalf("round trip: %d, %v", n2, err)
		}
		// Field re-encode (null header pairs are gone, so compare fields only).
		m := bolt.MessageOf(&fr)
		var out2 buffer.IoBuffer
		if err := c.EncodeMessage(&out2, &m); err != nil {
			t.Fatalf("EncodeMessage(MessageOf): %v", err)
		}
		var fr3 xprotocol.Frame
		if n3, err := c.Decode(out2.Bytes(), &fr3); n3 != out2.Len() || err != nil || !equalFrame(&fr, &fr3) {
			t.Fatalf("field round trip: %d, %v", n3, err)
		}
		// SetID on a copy keeps the frame valid.
		cp := bytes.Clone(raw)
		var fc xprotocol.Frame
		if _, err := c.Decode(cp, &fc); err != nil {
			t.Fatal(err)
		}
		c.SetID(&fc, uint64(fr.ID)^0x5a5a5a5a)
		var fs xprotocol.Frame
		if n4, err := c.Decode(cp, &fs); n4 != n || err != nil || fs.ID != fr.ID^0x5a5a5a5a {
			t.Fatalf("after SetID: %d, %v, id %#x", n4, err, fs.ID)
		}
		// Replies.
		var rep buffer.IoBuffer
		switch fr.Kind {
		case xprotocol.KindHeartbeat:
			if err := c.HeartbeatReply(&rep, &fr); err != nil {
				t.Fatal(err)
			}
			var rf xprotocol.Frame
			if _, err := c.Decode(rep.Bytes(), &rf); err != nil || rf.Kind != xprotocol.KindHeartbeatReply || rf.ID != fr.ID {
				t.Fatalf("heartbeat reply: %v %+v", err, rf)
			}
		case xprotocol.KindRequest:
			if err := c.Hijack(&rep, &fr, xprotocol.CauseNoRoute, ""); err != nil {
				t.Fatal(err)
			}
			var rf xprotocol.Frame
			if _, err := c.Decode(rep.Bytes(), &rf); err != nil || rf.Kind != xprotocol.KindResponse || rf.ID != fr.ID ||
				rf.Status != bolt.StatusNoProcessor || rf.Version != fr.Version {
				t.Fatalf("hijack: %v %+v", err, rf)
			}
		}
	})
}

// TestWriteFuzzSeeds rewrites the named seeds with -update-seeds and otherwise checks
// that they are all present and unchanged.
func TestWriteFuzzSeeds(t *testing.T) {
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	reqs, resps := capturedFrames(t)
	var hb, hb2, ga, hj buffer.IoBuffer
	_ = c1.Heartbeat(&hb, 1)
	_ = c2.Heartbeat(&hb2, 2)
	_ = c2.GoAway(&ga, 3)
	_ = c1.Hijack(&hj, decode(t, c1, testVector), xprotocol.CauseTimeout, "")
	crcHB := encodeMsg(t, c1, bolt.Message{Kind: xprotocol.KindHeartbeat, Version: 2, Ver1: 2, Switch: bolt.SwitchCRC,
		Ver2: 1, ID: 4, Codec: 1, Timeout: -1})
	nullHdr := mustHex("01 01 0001 01 00000001 01 00001388 0000 001a 00000000" +
		"00000001 61 FFFFFFFF FFFFFFFF 00000001 62 00000000 00000000")
	seeds := map[string][]byte{
		"test_vector":         testVector,
		"capture_request":     reqs[0],
		"capture_response":    resps[0],
		"capture_stream":      bytes.Join(append(reqs, resps...), nil),
		"v1_request_headers":  encodeMsg(t, c1, v1Request()),
		"v2_request_crc":      encodeMsg(t, c1, v2CRCRequest()),
		"v2_response":         encodeMsg(t, c1, v2Response()),
		"v1_heartbeat":        hb.Bytes(),
		"v2_heartbeat":        hb2.Bytes(),
		"v2_heartbeat_crc":    crcHB,
		"v2_goaway":           ga.Bytes(),
		"v1_hijack_response":  hj.Bytes(),
		"null_header_pairs":   nullHdr,
		"oversized_header":    mustHex("01 01 0001 01 00000001 01 FFFFFFFF FFFF FFFF FFFFFFFF"),
		"truncated_request":   reqs[0][:100],
		"bad_crc":             patch(encodeMsg(t, c1, v2CRCRequest()), 30, 0),
		"header_map_overruns": patch(testVector, 22, 0, 0, 0, 20),
	}
	invalid := map[string]bool{"oversized_header": true, "truncated_request": true, "bad_crc": true,
		"header_map_overruns": true}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, b := range seeds {
		if !invalid[name] && name != "capture_stream" {
			decode(t, c1, b) // the valid seeds are whole frames
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != body {
			t.Errorf("seed %s missing or stale (run go test -run TestWriteFuzzSeeds -update-seeds): %v", name, err)
		}
	}
}
