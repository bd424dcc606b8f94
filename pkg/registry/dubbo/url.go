package dubbo

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// URL is a Dubbo registry URL, such as
//
//	dubbo://10.0.0.5:20880/com.example.Echo?anyhost=true&interface=com.example.Echo&methods=echo,ping&side=provider&timestamp=1700000000000
//
// Dubbo writes parameter values unescaped, sorts the parameters by key and URL-encodes the
// whole string (java.net.URLEncoder) to name the registry node. String and ParseNode follow
// that layout so Dubbo applications and mosnlite read each other's nodes.
type URL struct {
	Protocol string            // "dubbo" for providers, "consumer" for consumers
	Host     string            // "ip:port" for providers, "ip" for consumers
	Path     string            // the interface
	Params   map[string]string // unescaped values
}

// Param returns the parameter key ("" when absent).
func (u *URL) Param(key string) string { return u.Params[key] }

// String is the URL in Dubbo's full-string form: parameters sorted by key, values raw.
func (u *URL) String() string {
	var b strings.Builder
	b.WriteString(u.Protocol)
	b.WriteString("://")
	b.WriteString(u.Host)
	b.WriteByte('/')
	b.WriteString(u.Path)
	keys := make([]string, 0, len(u.Params))
	for k := range u.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(u.Params[k])
	}
	return b.String()
}

// NodeName is the registry node's name: the URL-encoded full string.
func (u *URL) NodeName() string { return encodeComponent(u.String()) }

// encodeComponent encodes s as java.net.URLEncoder does (Go's QueryEscape differs only for
// '*' and '~', which Java keeps and escapes respectively).
func encodeComponent(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "%2A", "*")
	return strings.ReplaceAll(e, "~", "%7E")
}

var errNotURL = errors.New("not a dubbo URL")

// ParseNode decodes a registry node's name into a URL.
func ParseNode(name string) (*URL, error) {
	s, err := url.QueryUnescape(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotURL, err)
	}
	return ParseURL(s)
}

// ParseURL parses a URL's full string (parameter values are taken raw, as Dubbo does).
func ParseURL(s string) (*URL, error) {
	proto, rest, ok := strings.Cut(s, "://")
	if !ok || proto == "" {
		return nil, fmt.Errorf("%w: %q has no protocol", errNotURL, s)
	}
	rest, query, _ := strings.Cut(rest, "?")
	host, path, _ := strings.Cut(rest, "/")
	u := &URL{Protocol: proto, Host: host, Path: path, Params: map[string]string{}}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		u.Params[k] = v
	}
	return u, nil
}

// Interface is the URL's service interface: the "interface" parameter, else the path.
func (u *URL) Interface() string {
	if i := u.Params["interface"]; i != "" {
		return i
	}
	return u.Path
}

// hostPort returns the provider's "ip:port", or an error when the URL has none.
func (u *URL) hostPort() (string, error) {
	h, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 || h == "" {
		return "", fmt.Errorf("bad port in %q", u.Host)
	}
	return net.JoinHostPort(h, p), nil
}

// Selector is what a consumer asks for: an interface, a group and a version. Matching
// follows Dubbo's consumer rules: group "*" matches any group, a comma list matches each
// member, otherwise the groups must be equal (both empty included); version "*" matches any,
// otherwise the versions must be equal.
type Selector struct {
	Interface string
	Group     string
	Version   string
}

// Key is Dubbo's service key: "group/interface:version" without the empty parts.
func (s Selector) Key() string {
	k := s.Interface
	if s.Group != "" {
		k = s.Group + "/" + k
	}
	if s.Version != "" {
		k += ":" + s.Version
	}
	return k
}

// Matches reports whether provider u serves what s selects: a dubbo:// URL of the same
// interface, in the providers category, enabled, with a matching group and version.
func (s Selector) Matches(u *URL) bool {
	if u.Protocol != "dubbo" || u.Interface() != s.Interface {
		return false
	}
	if c := u.Params["category"]; c != "" && c != "providers" {
		return false
	}
	if u.Params["enabled"] == "false" {
		return false
	}
	g := u.Params["group"]
	switch {
	case s.Group == "*", s.Group == g:
	case strings.Contains(s.Group, ",") && slices.Contains(strings.Split(s.Group, ","), g):
	default:
		return false
	}
	return s.Version == "*" || s.Version == u.Params["version"]
}
