package bolt_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

var allKinds = []xprotocol.Kind{xprotocol.KindRequest, xprotocol.KindOneway, xprotocol.KindResponse,
	xprotocol.KindHeartbeat, xprotocol.KindHeartbeatReply, xprotocol.KindGoAway}

func randBytes(r *rand.Rand, max int) []byte {
	b := make([]byte, r.IntN(max+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// randMessage generates a valid message covering every field of the wire format.
func randMessage(r *rand.Rand) bolt.Message {
	m := bolt.Message{
		Kind:    allKinds[r.IntN(len(allKinds))],
		Version: 1 + byte(r.IntN(2)),
		Ver2:    byte(r.Uint32()),
		ID:      r.Uint32(),
		Codec:   byte(r.Uint32()),
	}
	if m.Version == 2 {
		m.Ver1 = 1 + byte(r.IntN(2))
		m.Switch = byte(r.Uint32())
	}
	switch m.Kind {
	case xprotocol.KindResponse, xprotocol.KindHeartbeatReply:
		m.Status = []uint16{0, 1, 4, 7, 0x10, 0x12, uint16(r.Uint32())}[r.IntN(7)]
	default:
		m.Timeout = []int32{-1, 0, 1, 5000, math.MaxInt32, math.MinInt32, int32(r.Uint32())}[r.IntN(7)]
	}
	if m.Kind == xprotocol.KindHeartbeat || m.Kind == xprotocol.KindHeartbeatReply || m.Kind == xprotocol.KindGoAway {
		return m
	}
	m.Class = randBytes(r, 60)
	m.Content = randBytes(r, 300)
	keys := []string{"service", "sofa_head_target_service", "sofa_head_method_name", "rpc_trace_context.sofaTraceId", ""}
	for range r.IntN(7) {
		k := []byte(keys[r.IntN(len(keys))])
		if r.IntN(3) == 0 {
			k = randBytes(r, 20)
		}
		m.Headers = append(m.Headers, xprotocol.Header{Key: k, Value: randBytes(r, 40)})
	}
	return m
}

// expectFrame is what decoding m must give, computed independently of the codec.
func expectFrame(m bolt.Message) xprotocol.Frame {
	f := xprotocol.Frame{Kind: m.Kind, ID: uint64(m.ID), Version: m.Version, Status: m.Status, Headers: m.Headers}
	if m.Timeout > 0 {
		f.Timeout = min(time.Duration(m.Timeout)*time.Millisecond, bolt.MaxTimeout)
	}
	var target []byte
	for _, h := range m.Headers {
		switch string(h.Key) {
		case "service":
			if f.Service == nil {
				f.Service = h.Value
			}
		case "sofa_head_target_service":
			if target == nil {
				target = h.Value
			}
		case "sofa_head_method_name":
			if f.Method == nil {
				f.Method = h.Value
			}
		}
	}
	if f.Service == nil {
		f.Service = target
	}
	return f
}

// TestRoundTripProperty: random message → EncodeMessage → Decode → the expected fields,
// MessageOf gives the message back, and re-encoding reproduces the bytes.
func TestRoundTripProperty(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	c := bolt.New(bolt.Options{})
	seen := map[[3]int]bool{}
	var f xprotocol.Frame
	for i := range 5000 {
		m := randMessage(r)
		raw := encodeMsg(t, c, m)
		f.Reset()
		n, err := c.Decode(raw, &f)
		if err != nil || n != len(raw) {
			t.Fatalf("case %d %+v: Decode = %d, %v", i, m, n, err)
		}
		want := expectFrame(m)
		if !equalFrame(&f, &want) {
			t.Fatalf("case %d: decoded %+v\nwant %+v", i, f, want)
		}
		crc := m.Version == 2 && m.Ver1 == 2 && m.Switch&bolt.SwitchCRC != 0
		if got := bolt.MessageOf(&f); !equalMessage(got, m) {
			t.Fatalf("case %d: MessageOf = %+v\nwant %+v", i, got, m)
		}
		if again := encodeMsg(t, c, bolt.MessageOf(&f)); !bytes.Equal(again, raw) {
			t.Fatalf("case %d: re-encode differs", i)
		}
		// A built frame with the same fields encodes to a frame that decodes the same.
		if f.Kind != xprotocol.KindHeartbeat && f.Kind != xprotocol.KindHeartbeatReply && f.Kind != xprotocol.KindGoAway {
			built := want
			var b buffer.IoBuffer
			if err := c.Encode(&b, &built); err != nil {
				t.Fatalf("case %d: Encode(built): %v", i, err)
			}
			g := decode(t, c, b.Bytes())
			if !equalFrame(g, &want) {
				t.Fatalf("case %d: built frame decodes to %+v", i, g)
			}
		}
		seen[[3]int{int(m.Kind), int(m.Version), map[bool]int{false: 0, true: 1}[crc]}] = true
	}
	if len(seen) != len(allKinds)*3 {
		t.Fatalf("generator covered %d of %d kind/version/crc combinations", len(seen), len(allKinds)*3)
	}
}
