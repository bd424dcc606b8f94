package stream

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

func parse(t testing.TB, raw string) *http1.RequestHead {
	t.Helper()
	var h http1.RequestHead
	n, err := http1.ParseRequestHead([]byte(raw), http1.Limits{}, &h)
	if err != nil || n != len(raw) {
		t.Fatalf("parse: n=%d err=%v", n, err)
	}
	return &h
}

const sample = "POST /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nX-Foo: one\r\nx-foo: two\r\nContent-Length: 0\r\n\r\n"

func TestHTTP1Request(t *testing.T) {
	r := HTTP1Request{Head: parse(t, sample)}
	if r.Host() != "example.com:8080" || r.Path() != "/a/b?x=1&y=2" || r.Method() != "POST" {
		t.Fatalf("got host=%q path=%q method=%q", r.Host(), r.Path(), r.Method())
	}
	for _, name := range []string{"x-foo", "X-FOO", "X-Foo"} {
		if v, ok := r.Header(name); !ok || v != "one" {
			t.Fatalf("Header(%q) = %q, %v", name, v, ok)
		}
	}
	if _, ok := r.Header("x-bar"); ok {
		t.Fatal("absent header found")
	}
	vars := map[string]string{"x-mosn-method": "POST", "x-mosn-host": "example.com:8080", "x-mosn-path": "/a/b", "x-mosn-querystring": "x=1&y=2"}
	for k, want := range vars {
		if v, ok := r.Variable(k); !ok || v != want {
			t.Fatalf("Variable(%q) = %q, %v; want %q", k, v, ok, want)
		}
	}
	if _, ok := r.Variable("nope"); ok {
		t.Fatal("unknown variable found")
	}
}

func TestHTTP1RequestNoAlloc(t *testing.T) {
	r := HTTP1Request{Head: parse(t, sample)}
	var sink int
	n := testing.AllocsPerRun(100, func() {
		v, _ := r.Header("X-FOO")
		q, _ := r.Variable("x-mosn-path")
		sink += len(r.Host()) + len(r.Path()) + len(r.Method()) + len(v) + len(q)
	})
	if n != 0 || sink == 0 {
		t.Fatalf("allocs = %v", n)
	}
}

func TestHTTP1Headers(t *testing.T) {
	h := parse(t, sample)
	hs := HTTP1Headers{H: &h.Headers}
	if v, ok := hs.Get("X-FOO"); !ok || v != "one" {
		t.Fatalf("Get = %q %v", v, ok)
	}
	hs.Set("x-foo", "three")
	hs.Add("X-New", "n")
	hs.Del("content-length")
	var got []string
	hs.Range(func(n, v string) bool { got = append(got, n+"="+v); return true })
	want := []string{"Host=example.com:8080", "x-foo=three", "X-New=n"}
	if len(got) != len(want) {
		t.Fatalf("got %q want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q want %q", got, want)
		}
	}
	calls := 0
	hs.Range(func(string, string) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Range did not stop: %d", calls)
	}
}

func TestSniffHTTP1(t *testing.T) {
	cases := []struct {
		in       string
		ok, more bool
	}{
		{"GET / HTTP/1.1\r\n", true, false},
		{"M-SEARCH * HTTP/1.1", true, false},
		{"GE", false, true},
		{"", false, true},
		{" GET", false, false},
		{"PRI * HTTP/2.0", true, false}, // the H2 preface is sniffed before HTTP/1 (l7-plan order)
		{"\x01\x01\x00", false, false},
		{"\xda\xbb\xc2", false, false},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false, false},
	}
	for _, c := range cases {
		ok, more := SniffHTTP1([]byte(c.in))
		if ok != c.ok || more != c.more {
			t.Errorf("SniffHTTP1(%q) = %v, %v; want %v, %v", c.in, ok, more, c.ok, c.more)
		}
	}
}
