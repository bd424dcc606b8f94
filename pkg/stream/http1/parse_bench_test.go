package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

func BenchmarkParseRequestHead(b *testing.B) {
	in := []byte(typicalRequest)
	var h RequestHead
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseRequestHead(in, Limits{}, &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponseHead(b *testing.B) {
	in := []byte(typicalResponse)
	var h ResponseHead
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := ParseResponseHead(in, Limits{}, &h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNetHTTPReadRequest is the reference: net/http parsing the same bytes, with a
// reused bufio.Reader.
func BenchmarkNetHTTPReadRequest(b *testing.B) {
	in := []byte(typicalRequest)
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNetHTTPReadResponse(b *testing.B) {
	in := []byte(typicalResponse)
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		if _, err := http.ReadResponse(br, nil); err != nil {
			b.Fatal(err)
		}
	}
}
