package dubbo

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// MaxTimeout caps the timeout a request may carry in its "timeout" attachment; larger
// values (up to any number of digits) are clamped to it, so they cannot overflow. The
// engine applies its route limit on top.
const MaxTimeout = 24 * time.Hour

// Interned keys of the attachments every Dubbo client sends.
var (
	keyGroup     = []byte("group")
	keyTimeout   = []byte("timeout")
	keyInterface = []byte("interface")
	keyPath      = []byte("path")
	keyDubbo     = []byte("dubbo")
)

func attachmentKey(k string) []byte {
	switch k {
	case "group":
		return keyGroup
	case "timeout":
		return keyTimeout
	case "interface":
		return keyInterface
	case "path":
		return keyPath
	case "version":
		return keyVersion
	case "dubbo":
		return keyDubbo
	}
	return []byte(k)
}

// DecodeAttachments extracts the attachments of a hessian2 request that Decode accepted:
// it appends every attachment with a string (or integer/boolean) value to f.Headers,
// sorted by key and skipping keys already there (the body's "service", "method" and
// "version" win over the attachments' copies), and sets f.Timeout from "timeout"
// (milliseconds, clamped to MaxTimeout; non-numeric or non-positive: none). It is
// idempotent and a no-op for other frames.
//
// It costs allocations (the hessian2 decoder), hence lazy by default: call it when the
// route needs "group" or the request's own timeout. On failure the frame is marked (see
// FrameError) and the error, wrapping ErrBody, is returned; the connection is unaffected.
func (c *Codec) DecodeAttachments(f *xprotocol.Frame) error {
	if f.Proto[protoFlags]&pfAttachments != 0 {
		return nil
	}
	if err := c.FrameError(f); err != nil {
		return err
	}
	if !isRequest(f) {
		return nil
	}
	if c.flatAttachments(f) {
		f.Proto[protoFlags] |= pfAttachments
		return nil
	}
	m, err := c.attachments(f)
	if err != nil {
		return err
	}
	f.Proto[protoFlags] |= pfAttachments
	keys := make([]string, 0, len(m))
	for k := range m {
		if _, dup := f.Header(k); !dup {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		f.Headers = append(f.Headers, xprotocol.Header{Key: attachmentKey(k), Value: []byte(m[k])})
	}
	f.Timeout = parseTimeout(m["timeout"])
	return nil
}

// Attachments returns the attachments of a hessian2 request decoded by Decode as a new map
// (values converted as DecodeAttachments does). It does not change f except to mark it
// when the body is unreadable.
func (c *Codec) Attachments(f *xprotocol.Frame) (map[string]string, error) {
	if err := c.FrameError(f); err != nil {
		return nil, err
	}
	if !isRequest(f) {
		return nil, nil
	}
	return c.attachments(f)
}

func isRequest(f *xprotocol.Frame) bool {
	return (f.Kind == xprotocol.KindRequest || f.Kind == xprotocol.KindOneway) && f.Proto[protoDesc] != 0
}

// attachments walks the parameter descriptor and the arguments (bounded, allocation-free),
// then lets dubbo-go-hessian2 decode the attachments map: on its own when it is a flat map
// of scalars (every Dubbo 2 client's Map<String,String>), else together with the arguments
// it may refer to (class definitions, refs).
func (c *Codec) attachments(f *xprotocol.Frame) (map[string]string, error) {
	raw := f.Raw
	descAt := int(f.Proto[protoDesc])
	if descAt < HeaderLen || descAt > len(raw) {
		markBad(f, reasonArguments)
		return nil, reasonErrs[reasonArguments]
	}
	start, end, nargs, flat, err := walkRequest(raw, descAt, c.depthLimit())
	if err != nil {
		markBad(f, reasonArguments)
		return nil, fmt.Errorf("%w: %w", reasonErrs[reasonArguments], err)
	}
	if start == end {
		return map[string]string{}, nil // no attachments, or null
	}
	var v any
	if flat {
		v, err = decodeFlat(raw[start:end])
	} else {
		v, err = decodeLib(raw[descAt:end], 1+nargs)
	}
	if err == nil {
		var m map[string]string
		if m, err = toStrings(v); err == nil {
			return m, nil
		}
	}
	if errors.Is(err, ErrDecoderPanic) {
		markBad(f, reasonPanic)
	} else {
		markBad(f, reasonAttachments)
	}
	return nil, fmt.Errorf("%w: %w", reasonErrs[f.Proto[protoReason]], err)
}

// walkRequest skips the descriptor at raw[descAt] and the arguments it declares and
// returns where the attachments value starts and ends (equal when absent or null), the
// argument count, and whether the attachments are a flat map of scalars.
func walkRequest(raw []byte, descAt, maxDepth int) (start, end, nargs int, flat bool, err error) {
	desc, i, null, err := readString(raw, descAt)
	if err != nil {
		return 0, 0, 0, false, err
	}
	if null {
		return 0, 0, 0, false, errNotString
	}
	nargs = countArgs(desc)
	w := newWalker(raw, maxDepth)
	for range nargs {
		if i, err = w.value(i, 0); err != nil {
			return 0, 0, 0, false, err
		}
	}
	if i == len(raw) || raw[i] == tagNull {
		return i, i, nargs, false, nil
	}
	before := w.complex
	if end, err = w.value(i, 0); err != nil {
		return 0, 0, 0, false, err
	}
	flat = w.complex-before == 1 && (raw[i] == tagMapUntyped || raw[i] == tagMap)
	return i, end, nargs, flat, nil
}

// decodeLib decodes values from b with dubbo-go-hessian2, returning the value after the
// first skip ones. A panic inside the library is recovered into an error wrapping
// ErrDecoderPanic. The caller has walked b, so nesting and declared lengths are bounded.
func decodeLib(b []byte, skip int) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: %v", ErrDecoderPanic, r)
		}
	}()
	d := hessian.NewDecoder(b)
	for range skip {
		if _, err := d.Decode(); err != nil {
			return nil, err
		}
	}
	return d.Decode()
}

// flatDecoders reuses library decoders (and their 4 KiB read buffers) for flat maps. Only
// flat maps: they hold no lists, so the decoder's ref holders (which Reset does not clear)
// stay empty. A decoder that panicked is dropped.
var flatDecoders = sync.Pool{New: func() any { return hessian.NewDecoder(nil) }}

// decodeFlat decodes one flat map with a pooled library decoder, under recover.
func decodeFlat(b []byte) (v any, err error) {
	d := flatDecoders.Get().(*hessian.Decoder)
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: %v", ErrDecoderPanic, r)
			return
		}
		d.Reset(nil)
		flatDecoders.Put(d)
	}()
	return d.Reset(b).Decode()
}

// toStrings converts a decoded attachments map the way dubbo-go does (string values; null
// as ""), also keeping integer and boolean values in decimal form. Other values are
// dropped; a non-map is an error.
func toStrings(v any) (map[string]string, error) {
	switch m := v.(type) {
	case nil:
		return map[string]string{}, nil
	case map[any]any:
		out := make(map[string]string, len(m))
		for k, val := range m {
			ks, ok := k.(string)
			if !ok {
				continue
			}
			switch x := val.(type) {
			case string:
				out[ks] = x
			case nil:
				out[ks] = ""
			case int32:
				out[ks] = strconv.FormatInt(int64(x), 10)
			case int64:
				out[ks] = strconv.FormatInt(x, 10)
			case bool:
				out[ks] = strconv.FormatBool(x)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("attachments are %T, not a map", v)
}

// emptyValue is the value of a null attachment.
var emptyValue = []byte{}

// flatAttachments is DecodeAttachments' allocation-free path for the attachments every
// Dubbo client sends: a flat map whose keys and values are single-chunk strings (or null
// values). Keys and values alias f.Raw. It reports false, leaving f unchanged, for
// anything else (integer or boolean values, chunked strings, surrogate pairs, a body the
// walker refuses), which the library path then handles.
func (c *Codec) flatAttachments(f *xprotocol.Frame) bool {
	raw := f.Raw
	descAt := int(f.Proto[protoDesc])
	if descAt < HeaderLen || descAt > len(raw) {
		return false
	}
	start, end, _, flat, err := walkRequest(raw, descAt, c.depthLimit())
	if err != nil {
		return false
	}
	if start == end {
		f.Timeout = 0
		return true
	}
	if !flat {
		return false
	}
	i := start + 1
	if raw[start] == tagMap {
		_, next, _, null, err := stringAt(raw, i) // the map's type name
		if err != nil || null {
			return false
		}
		i = next
	}
	base := len(f.Headers)
	fail := func() bool {
		clear(f.Headers[base:])
		f.Headers = f.Headers[:base]
		return false
	}
	var timeout []byte
	for i < end && raw[i] != tagEnd {
		k, next, plain, null, err := stringAt(raw, i)
		if err != nil || !plain || null || next >= end {
			return fail()
		}
		v := emptyValue
		if raw[next] == tagNull {
			next++
		} else if v, next, plain, null, err = stringAt(raw, next); err != nil || !plain || null {
			return fail()
		}
		i = next
		if hasKey(f.Headers[:base], k) {
			continue // the body's service, method and version win
		}
		if j := indexKey(f.Headers[base:], k); j >= 0 {
			f.Headers[base+j].Value = v // a repeated key: the last one wins, as in a map
		} else {
			f.Headers = append(f.Headers, xprotocol.Header{Key: k, Value: v})
		}
		if string(k) == "timeout" {
			timeout = v
		}
	}
	if i != end-1 || raw[i] != tagEnd {
		return fail()
	}
	hs := f.Headers[base:]
	for a := 1; a < len(hs); a++ { // insertion sort by key: a handful of entries
		for b := a; b > 0 && string(hs[b].Key) < string(hs[b-1].Key); b-- {
			hs[b], hs[b-1] = hs[b-1], hs[b]
		}
	}
	f.Timeout = parseTimeout(timeout)
	return true
}

func hasKey(hs []xprotocol.Header, k []byte) bool { return indexKey(hs, k) >= 0 }

func indexKey(hs []xprotocol.Header, k []byte) int {
	for i := range hs {
		if string(hs[i].Key) == string(k) {
			return i
		}
	}
	return -1
}

// parseTimeout reads a decimal millisecond count; anything else, or zero, is no timeout.
func parseTimeout[T string | []byte](s T) time.Duration {
	if len(s) == 0 {
		return 0
	}
	const maxMS = int64(MaxTimeout / time.Millisecond)
	var ms int64
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < '0' || ch > '9' {
			return 0
		}
		if ms <= maxMS { // saturate: never overflows
			ms = ms*10 + int64(ch-'0')
		}
	}
	if ms > maxMS {
		return MaxTimeout
	}
	return time.Duration(ms) * time.Millisecond
}
