package router

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/mosnlite/mosnlite/pkg/config"
)

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

type hashPolicy struct {
	kind hashKind
	name string
	src  source
}

func newHashPolicies(cfg []config.HashPolicy) ([]hashPolicy, error) {
	var out []hashPolicy
	for i, h := range cfg {
		var hp hashPolicy
		n := 0
		if h.Header != nil {
			n++
			hp = hashPolicy{kind: hashHeader, name: h.Header.Key, src: sourceOf(h.Header.Key)}
		}
		if h.Cookie != nil {
			n++
			hp = hashPolicy{kind: hashCookie, name: h.Cookie.Name}
		}
		if h.SourceIP != nil {
			n++
			hp = hashPolicy{kind: hashSourceIP}
		}
		if h.HTTPParam != nil {
			n++
			hp = hashPolicy{kind: hashQuery, name: h.HTTPParam.Name}
		}
		switch {
		case n != 1:
			return nil, fmt.Errorf("hash_policy[%d]: set exactly one of header, cookie, source_ip, http_query_parameter", i)
		case hp.kind != hashSourceIP && hp.name == "":
			return nil, fmt.Errorf("hash_policy[%d]: missing header key, cookie name or parameter name", i)
		}
		out = append(out, hp)
	}
	return out, nil
}

// HashKey computes the consistent-hash key for LB_MAGLEV from the route's hash_policy
// entries, in order: header value, cookie value, source IP, or query parameter. Entries
// whose input is absent are skipped; the others combine as Envoy combines them (rotate the
// key so far left by one, xor the next). false when the route has no hash policy or none
// of its inputs is present. The hash is 64-bit FNV-1a: stable across processes, so every
// sidecar maps a key to the same host. It does not allocate.
func (rt *Route) HashKey(r Request, srcIP netip.Addr) (uint64, bool) {
	var key uint64
	found := false
	for i := range rt.hash {
		hp := &rt.hash[i]
		var h uint64
		switch hp.kind {
		case hashHeader:
			v, ok := lookup(r, hp.src, hp.name)
			if !ok {
				continue
			}
			h = fnv(fnvOffset, v)
		case hashCookie:
			c, ok := r.Header("cookie")
			if !ok {
				continue
			}
			v, ok := cookieValue(c, hp.name)
			if !ok {
				continue
			}
			h = fnv(fnvOffset, v)
		case hashSourceIP:
			if !srcIP.IsValid() {
				continue
			}
			b := srcIP.Unmap().As16()
			h = fnvBytes(fnvOffset, b[:])
		case hashQuery:
			v, ok := queryValue(r.Path(), hp.name)
			if !ok {
				continue
			}
			h = fnv(fnvOffset, v)
		}
		if found {
			key = (key<<1 | key>>63) ^ h
		} else {
			key, found = h, true
		}
	}
	return key, found
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// cookieValue finds name in a Cookie header ("a=1; b=2").
func cookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == name {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// queryValue finds the first parameter called name in the query of path. The value is used
// as sent, not unescaped; a parameter without "=" has the value "".
func queryValue(path, name string) (string, bool) {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return "", false
	}
	if i := strings.IndexByte(q, '#'); i >= 0 {
		q = q[:i]
	}
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}
