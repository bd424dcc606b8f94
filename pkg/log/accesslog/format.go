// Package accesslog writes MOSN-format access logs: a log_format of %variable% tokens
// and literal text is compiled once per listener, each finished request is rendered into a
// per-connection scratch line, and lines go through a bounded, non-blocking asynchronous
// writer (a full buffer drops the line and counts it).
//
// Values that alias a request's read buffers (headers, the path) are captured into the
// request's Info when they are still valid (CaptureRequest at request-head time,
// CaptureResponse at response-head time); rendering happens when the request ends.
// Nothing here allocates per request in steady state.
//
// Variables (MOSN's names): start_time, request_received_duration,
// response_received_duration, request_finished_duration, duration, bytes_sent,
// bytes_received, protocol, response_code, response_flag, response_flags,
// upstream_local_address, downstream_local_address, downstream_remote_address,
// upstream_host, upstream_cluster, upstream_transport_failure_reason, route_name,
// requested_server_name, the request variables x-mosn-method, x-mosn-host, x-mosn-path,
// x-mosn-querystring, and the prefixes request_header_<name> and response_header_<name>.
// A value that is absent is written as "-". Attacker-controlled values (headers, path,
// host) are escaped: bytes below 0x20, 0x7f and above, '"' and '\' become \xHH.
package accesslog

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultFormat is MOSN's default access log format.
const DefaultFormat = "%start_time% %request_received_duration% %response_received_duration% %bytes_sent%" +
	" %bytes_received% %protocol% %response_code% %duration% %response_flag% %response_code%" +
	" %upstream_local_address% %downstream_local_address% %downstream_remote_address% %upstream_host%"

// Prefixes of the header variables.
const (
	PrefixRequestHeader  = "request_header_"
	PrefixResponseHeader = "response_header_"
)

type varID uint8

const (
	varLiteral varID = iota
	varStartTime
	varRequestReceived
	varResponseReceived
	varRequestFinished
	varDuration
	varBytesSent
	varBytesReceived
	varProtocol
	varResponseCode
	varResponseFlag
	varUpstreamLocal
	varDownstreamLocal
	varDownstreamRemote
	varUpstreamHost
	varUpstreamCluster
	varFailureReason
	varRouteName
	varServerName
	varRequestSlot  // a captured request header or variable
	varResponseSlot // a captured response header
)

var simpleVars = map[string]varID{
	"start_time":                        varStartTime,
	"request_received_duration":         varRequestReceived,
	"response_received_duration":        varResponseReceived,
	"request_finished_duration":         varRequestFinished,
	"duration":                          varDuration,
	"bytes_sent":                        varBytesSent,
	"bytes_received":                    varBytesReceived,
	"protocol":                          varProtocol,
	"response_code":                     varResponseCode,
	"response_flag":                     varResponseFlag,
	"response_flags":                    varResponseFlag,
	"upstream_local_address":            varUpstreamLocal,
	"downstream_local_address":          varDownstreamLocal,
	"downstream_remote_address":         varDownstreamRemote,
	"upstream_host":                     varUpstreamHost,
	"upstream_cluster":                  varUpstreamCluster,
	"upstream_transport_failure_reason": varFailureReason,
	"route_name":                        varRouteName,
	"requested_server_name":             varServerName,
}

// requestVariables are read through RequestView.Variable.
var requestVariables = []string{"x-mosn-method", "x-mosn-host", "x-mosn-path", "x-mosn-querystring"}

// Variables lists the known variable names (the header prefixes end with "<name>").
func Variables() []string {
	out := make([]string, 0, len(simpleVars)+len(requestVariables)+2)
	for k := range simpleVars {
		out = append(out, k)
	}
	out = append(out, requestVariables...)
	sort.Strings(out)
	return append(out, PrefixRequestHeader+"<name>", PrefixResponseHeader+"<name>")
}

type part struct {
	id   varID
	lit  string
	slot int // varRequestSlot / varResponseSlot: index into the captured values
}

// slotKey names one captured value: a header (header true) or a request variable.
type slotKey struct {
	name   string
	header bool
}

// format is a compiled log_format.
type format struct{ parts []part }

// keys is the union of captured values over a listener's formats.
type keys struct {
	req  []slotKey
	resp []string
}

func (k *keys) reqSlot(s slotKey) int {
	for i, x := range k.req {
		if x == s {
			return i
		}
	}
	k.req = append(k.req, s)
	return len(k.req) - 1
}

func (k *keys) respSlot(name string) int {
	for i, x := range k.resp {
		if x == name {
			return i
		}
	}
	k.resp = append(k.resp, name)
	return len(k.resp) - 1
}

// Validate reports whether format compiles; the error names the first unknown variable
// and lists the known ones.
func Validate(format string) error {
	_, err := compile(format, &keys{})
	return err
}

func compile(s string, k *keys) (*format, error) {
	if s == "" {
		s = DefaultFormat
	}
	f := &format{}
	lit := strings.Builder{}
	flush := func() {
		if lit.Len() > 0 {
			f.parts = append(f.parts, part{id: varLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' { // "%%" is a literal percent sign
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := strings.IndexByte(s[i+1:], '%')
		if end < 0 {
			return nil, fmt.Errorf("unterminated variable at byte %d: %q", i, s[i:])
		}
		name := s[i+1 : i+1+end]
		i += end + 2
		p, err := variable(name, k)
		if err != nil {
			return nil, err
		}
		flush()
		f.parts = append(f.parts, p)
	}
	flush()
	return f, nil
}

func variable(name string, k *keys) (part, error) {
	if id, ok := simpleVars[name]; ok {
		return part{id: id}, nil
	}
	for _, v := range requestVariables {
		if name == v {
			return part{id: varRequestSlot, slot: k.reqSlot(slotKey{name: v})}, nil
		}
	}
	switch {
	case strings.HasPrefix(name, PrefixRequestHeader) && len(name) > len(PrefixRequestHeader):
		return part{id: varRequestSlot, slot: k.reqSlot(slotKey{name: name[len(PrefixRequestHeader):], header: true})}, nil
	case strings.HasPrefix(name, PrefixResponseHeader) && len(name) > len(PrefixResponseHeader):
		return part{id: varResponseSlot, slot: k.respSlot(name[len(PrefixResponseHeader):])}, nil
	}
	return part{}, fmt.Errorf("unknown variable %%%s%% (known: %s)", name, strings.Join(Variables(), ", "))
}
