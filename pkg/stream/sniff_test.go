package stream

import "testing"

func TestSniff(t *testing.T) {
	for _, c := range []struct {
		in      string
		allowed []Protocol
		want    Protocol
		more    bool
	}{
		{"", nil, "", true},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nil, HTTP2, false},
		{"PRI * HTTP/2.0\r\n", nil, "", true},
		{"PRI * HTTP/1.1\r\n", nil, HTTP1, false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", []Protocol{HTTP1}, HTTP1, false},
		{"GET / HTTP/1.1\r\n", nil, HTTP1, false},
		{"GE", nil, "", true},
		{"\x01\x01\x00\x01", nil, Bolt, false},
		{"\x02\x01\x01", nil, BoltV2, false},
		{"\x02\x01\x01", []Protocol{Bolt}, "", false},
		{"\xda", nil, "", true},
		{"\xda\xbb\xc2", nil, Dubbo, false},
		{"\xda\xbc", nil, "", false},
		{"\xda\xbb", []Protocol{HTTP1, HTTP2}, "", false},
		{"\x16\x03\x01", nil, "", false},
	} {
		p, more := Sniff([]byte(c.in), c.allowed)
		if p != c.want || more != c.more {
			t.Errorf("Sniff(%q, %v) = %q, %v; want %q, %v", c.in, c.allowed, p, more, c.want, c.more)
		}
	}
}
