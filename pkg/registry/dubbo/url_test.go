package dubbo

import (
	"strings"
	"testing"
)

// A provider node as Dubbo 2.7 (Java, Curator) writes it: the full URL, parameters sorted,
// values raw, encoded with java.net.URLEncoder.
const javaNode = "dubbo%3A%2F%2F10.0.0.5%3A20880%2Fcom.example.EchoService%3Fanyhost%3Dtrue%26application%3Ddemo-provider" +
	"%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26group%3Dblue" +
	"%26interface%3Dcom.example.EchoService%26methods%3Decho%2Cping%26pid%3D4242%26release%3D2.7.8" +
	"%26side%3Dprovider%26timestamp%3D1600000000000%26version%3D1.0.0"

func TestParseDubboNode(t *testing.T) {
	u, err := ParseNode(javaNode)
	if err != nil {
		t.Fatal(err)
	}
	if u.Protocol != "dubbo" || u.Host != "10.0.0.5:20880" || u.Path != "com.example.EchoService" ||
		u.Param("methods") != "echo,ping" || u.Param("group") != "blue" || u.Param("version") != "1.0.0" {
		t.Fatalf("parsed %+v", u)
	}
	// Written back, it is the same node name byte for byte.
	if got := u.NodeName(); got != javaNode {
		t.Fatalf("NodeName:\n got %s\nwant %s", got, javaNode)
	}
	if hp, err := u.hostPort(); err != nil || hp != "10.0.0.5:20880" {
		t.Fatalf("hostPort = %q, %v", hp, err)
	}
}

func TestURLEncodingLikeJava(t *testing.T) {
	u := &URL{Protocol: "dubbo", Host: "1.2.3.4:1", Path: "a.B$c", Params: map[string]string{"x": "a*b~c d"}}
	// java.net.URLEncoder keeps '*', escapes '~' and turns ' ' into '+'.
	want := "dubbo%3A%2F%2F1.2.3.4%3A1%2Fa.B%24c%3Fx%3Da*b%7Ec+d"
	if got := u.NodeName(); got != want {
		t.Fatalf("NodeName = %s, want %s", got, want)
	}
	back, err := ParseNode(want)
	if err != nil || back.String() != u.String() {
		t.Fatalf("round trip: %v %v", back, err)
	}
	for _, bad := range []string{"no-protocol", "%zz", "://x"} {
		if _, err := ParseNode(bad); err == nil {
			t.Errorf("ParseNode(%q): no error", bad)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	provider := func(q string) *URL {
		u, err := ParseURL("dubbo://10.0.0.1:20880/com.example.S?interface=com.example.S&" + q)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	cases := []struct {
		sel  Selector
		q    string
		want bool
	}{
		{Selector{Interface: "com.example.S"}, "side=provider", true},
		{Selector{Interface: "com.example.S"}, "group=g", false},
		{Selector{Interface: "com.example.S"}, "version=1", false},
		{Selector{Interface: "com.example.S", Group: "g"}, "group=g", true},
		{Selector{Interface: "com.example.S", Group: "g"}, "group=h", false},
		{Selector{Interface: "com.example.S", Group: "*"}, "group=h", true},
		{Selector{Interface: "com.example.S", Group: "g,h"}, "group=h", true},
		{Selector{Interface: "com.example.S", Group: "g,h"}, "group=i", false},
		{Selector{Interface: "com.example.S", Version: "1"}, "version=1", true},
		{Selector{Interface: "com.example.S", Version: "1"}, "version=2", false},
		{Selector{Interface: "com.example.S", Version: "*"}, "version=2", true},
		{Selector{Interface: "com.example.S"}, "enabled=false", false},
		{Selector{Interface: "com.example.S"}, "category=configurators", false},
		{Selector{Interface: "com.example.T"}, "", false},
	}
	for _, c := range cases {
		if got := c.sel.Matches(provider(c.q)); got != c.want {
			t.Errorf("%+v matches %q = %v, want %v", c.sel, c.q, got, c.want)
		}
	}
	empty, _ := ParseURL("empty://10.0.0.1/com.example.S?interface=com.example.S")
	if (Selector{Interface: "com.example.S"}).Matches(empty) {
		t.Error("an empty:// URL matched")
	}
}

func TestServiceKeyAndPaths(t *testing.T) {
	for _, c := range []struct {
		sel  Selector
		want string
	}{
		{Selector{Interface: "a.S"}, "a.S"},
		{Selector{Interface: "a.S", Group: "g"}, "g/a.S"},
		{Selector{Interface: "a.S", Version: "1.0"}, "a.S:1.0"},
		{Selector{Interface: "a.S", Group: "g", Version: "1.0"}, "g/a.S:1.0"},
	} {
		if got := ClusterName(c.sel); got != c.want {
			t.Errorf("ClusterName(%+v) = %q, want %q", c.sel, got, c.want)
		}
	}
	u := &URL{Protocol: "consumer", Host: "10.0.0.1", Path: "a.S", Params: map[string]string{"interface": "a.S", "side": "consumer"}}
	if p := NodePath(u); !strings.HasPrefix(p, "/dubbo/a.S/consumers/consumer%3A%2F%2F10.0.0.1%2Fa.S%3F") {
		t.Errorf("NodePath = %s", p)
	}
}
