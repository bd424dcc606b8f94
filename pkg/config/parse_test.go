package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

func mosnFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/mosn/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	return files
}

// TestMOSNExamples: every example config from MOSN loads, defaults and validates.
func TestMOSNExamples(t *testing.T) {
	sources, err := os.ReadFile("testdata/mosn/SOURCES.md")
	if err != nil {
		t.Fatal(err)
	}
	wantWarning := map[string]string{
		"bolt_server_config.json": "servers[0].listeners[0].stream_filters[0].type",
		"auto_bolt_config.json":   "servers[0].listeners[0].stream_filters[0].type",
	}
	for _, f := range mosnFiles(t) {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if !bytes.Contains(sources, []byte("| "+name+" |")) {
				t.Errorf("%s is not listed in SOURCES.md", name)
			}
			for _, strict := range []bool{false, true} {
				c, warnings, err := config.Load(f, config.ParseOptions{Strict: strict})
				if err != nil {
					t.Fatalf("Load(strict=%v): %v", strict, err)
				}
				if len(warnings) > 0 {
					t.Errorf("Load warnings: %v", warnings)
				}
				c.ApplyDefaults()
				vw, err := c.Validate()
				if err != nil {
					t.Fatalf("Validate:\n%v", err)
				}
				if path, ok := wantWarning[name]; ok && !find(vw, path, `stream filter "healthcheck" was removed from MOSN; ignored`) {
					t.Errorf("want the healthcheck warning at %s; got %v", path, vw)
				}
			}
		})
	}
}

// TestDecodersAgree: each file decodes to the same Config with json-iterator (what Parse
// uses), encoding/json (MOSN's loader), and Parse itself (STYLE.md §7).
func TestDecodersAgree(t *testing.T) {
	for _, f := range mosnFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			assertDecodersAgree(t, data)
		})
	}
}

// assertDecodersAgree decodes data with encoding/json and Parse, and also with json-iterator
// directly unless skipIter (json-iterator keeps invalid UTF-8 that the others replace).
func assertDecodersAgree(t *testing.T, data []byte, skipIter ...bool) *config.Config {
	t.Helper()
	var viaIter, viaStd config.Config
	if err := config.Unmarshal(data, &viaIter); err != nil {
		t.Fatalf("json-iterator: %v", err)
	}
	if err := json.Unmarshal(data, &viaStd); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	parsed, _, err := config.Parse(data, config.ParseOptions{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(skipIter) == 0 && !reflect.DeepEqual(viaIter, viaStd) {
		t.Errorf("json-iterator and encoding/json differ:\n%+v\n%+v", viaIter, viaStd)
	}
	if !reflect.DeepEqual(*parsed, viaStd) {
		t.Errorf("Parse and encoding/json differ:\n%+v\n%+v", *parsed, viaStd)
	}
	return parsed
}

// TestKeysMatchCaseInsensitively: MOSN writes "Name"; any case works, with both libraries,
// and Parse neither warns about such keys nor uses them in paths.
func TestKeysMatchCaseInsensitively(t *testing.T) {
	upper := `{"SERVERS":[{"Listeners":[{"NAME":"l","Address":"127.0.0.1:1","Bind_Port":false,"Use_Original_Dst":true,` +
		`"Filter_Chains":[{"FILTERS":[{"Type":"tcp_proxy","Config":{"Cluster":"c"}}]}],"Connection_Idle_Timeout":"5s"}]}],` +
		`"Cluster_Manager":{"Clusters":[{"Name":"c","TYPE":"SIMPLE","Lb_Type":"LB_RANDOM","Connect_Timeout":"1s",` +
		`"HOSTS":[{"Address":"127.0.0.1:2","Weight":3,"MetaData":{"Zone":"a"}}],"LbConfig":{"Choice_Count":3}}]},"Drain":{"TIMEOUT":"2s"}}`
	c := assertDecodersAgree(t, []byte(upper))
	_, warnings, _ := config.Parse([]byte(upper), config.ParseOptions{Strict: true})
	if len(warnings) > 0 {
		t.Errorf("warnings for case variants: %v", warnings)
	}
	l := c.Servers[0].Listeners[0]
	cl := c.ClusterManager.Clusters[0]
	if l.Name != "l" || l.BindsPort() || l.UseOriginalDst != config.OriginalDstRedirect || l.ConnectionIdleTimeout.D() != 5*time.Second ||
		cl.Name != "c" || cl.LBType != "LB_RANDOM" || cl.Hosts[0].Weight != 3 || cl.Hosts[0].MetaData["Zone"] != "a" ||
		cl.LBConfig.ChoiceCount != 3 || c.Drain.Timeout.D() != 2*time.Second {
		t.Errorf("decoded %+v", c)
	}
	_, _, err := config.Parse([]byte(`{"Cluster_Manager":{"CLUSTERS":[{"NAME":7}]}}`), config.ParseOptions{})
	if !find(asProblems(t, err), "cluster_manager.clusters[0].name", "expected a string") {
		t.Errorf("path does not use the canonical key: %v", err)
	}
}

// TestKeysFoldLikeEncodingJSON: Parse folds keys as encoding/json does, beyond ASCII, even
// where json-iterator alone would not (its small-struct decoders fold ASCII only).
func TestKeysFoldLikeEncodingJSON(t *testing.T) {
	data := []byte(`{"servers":[{"routers":[{"virtual_hosts":[{"routers":[{"route":{"hash_policy":[{"header":{"\u212aey":"x-user"}}]}}]}]}]}]}`)
	var std config.Config
	if err := json.Unmarshal(data, &std); err != nil {
		t.Fatal(err)
	}
	c, warnings, err := config.Parse(data, config.ParseOptions{Strict: true})
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Parse: %v %v", warnings, err)
	}
	if !reflect.DeepEqual(*c, std) {
		t.Errorf("Parse and encoding/json differ:\n%+v\n%+v", *c, std)
	}
}

func asProblems(t *testing.T, err error) config.Problems {
	t.Helper()
	var ps config.Problems
	if err != nil && !errors.As(err, &ps) {
		t.Fatalf("error %T is not Problems: %v", err, err)
	}
	return ps
}

func TestSyntaxErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "line 1, column 1: empty document"},
		{"\n\n  ", "line 3, column 3: empty document"},
		{`{"a" 1}`, "line 1, column 6: invalid character '1' after object key"},
		{"{\n\"a\": [1 2]}", "line 2, column 9: invalid character '2' after array element (missing comma?)"},
		{`{"a": tru}`, "line 1, column 10: invalid character '}' in literal true"},
		{`{"a": "x` + "\n" + `"}`, `line 1, column 9: invalid control character '\n' in string`},
		{`{"a": "\q"}`, `line 1, column 8: invalid escape "\\q" in string`},
		{`{"a": 01}`, "line 1, column 8: invalid character '1' after object value"},
		{`{"a": -}`, "line 1, column 8: invalid character '}' in numeric literal"},
		{`{"a": 1.}`, "line 1, column 9: invalid character '}' after decimal point"},
		{`{"a": "x`, "line 1, column 7: unterminated string"},
		{strings.Repeat("[", 1000), "nesting deeper than"},
		{"\xef\xbb\xbf{} x", "line 1, column 7: invalid character 'x' after the top-level value"},
	} {
		_, _, err := config.Parse([]byte(tc.in), config.ParseOptions{})
		ps := asProblems(t, err)
		if len(ps) != 1 || ps[0].Path != "$" || !strings.Contains(ps[0].Msg, tc.want) {
			t.Errorf("Parse(%.30q) = %v; want $: ...%s", tc.in, err, tc.want)
		}
	}
	// A byte order mark alone is not an error.
	if _, _, err := config.Parse([]byte("\xef\xbb\xbf{}"), config.ParseOptions{}); err != nil {
		t.Errorf("BOM: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	_, _, err := config.Load(filepath.Join(t.TempDir(), "missing.json"), config.ParseOptions{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("Load(missing) = %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(p, []byte(`{"servers": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := config.Load(p, config.ParseOptions{})
	if ps := asProblems(t, err); c != nil || len(ps) != 1 || ps[0].Error() != "servers: expected an array, got number 1" {
		t.Errorf("Load(bad) = %v, %v", c, err)
	}
}

func TestProblemsError(t *testing.T) {
	ps := config.Problems{{Path: "$", Msg: "a"}, {Path: "servers[0].name", Msg: "b"}}
	if got := ps.Error(); got != "$: a\nservers[0].name: b" {
		t.Errorf("Error() = %q", got)
	}
}

func TestDurationJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{`"15s"`, 15 * time.Second, ""},
		{`"1.5s"`, 1500 * time.Millisecond, ""},
		{`"1h2m"`, time.Hour + 2*time.Minute, ""},
		{`"0s"`, 0, ""},
		{`60000000000`, time.Minute, ""},
		{`0`, 0, ""},
		{`"15"`, 0, `invalid duration "15"`},
		{`""`, 0, `invalid duration ""`},
		{`"-1s"`, 0, `negative duration "-1s"`},
		{`-1`, 0, "negative duration -1"},
		{`1.5`, 0, "whole nanoseconds"},
		{`1e9`, 0, "whole nanoseconds"},
		{`99999999999999999999`, 0, "out of range"},
		{`true`, 0, "got boolean"},
		{`{}`, 0, "got object"},
	} {
		var d config.Duration
		err := d.UnmarshalJSON([]byte(tc.in))
		switch {
		case tc.err == "" && (err != nil || d.D() != tc.want):
			t.Errorf("UnmarshalJSON(%s) = %v, %v; want %v", tc.in, d.D(), err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("UnmarshalJSON(%s) = %v; want error containing %q", tc.in, err, tc.err)
		}
	}
	d := config.Duration(7)
	if err := d.UnmarshalJSON([]byte("null")); err != nil || d != 7 {
		t.Errorf("null: %v, %v", d, err)
	}
	type wrap struct {
		D  config.Duration  `json:"d"`
		P  *config.Duration `json:"p"`
		No *config.Duration `json:"no,omitempty"`
	}
	p := config.Duration(1500 * time.Millisecond)
	out, err := json.Marshal(wrap{D: config.Duration(90 * time.Second), P: &p})
	if err != nil || string(out) != `{"d":"1m30s","p":"1.5s"}` {
		t.Errorf("Marshal = %s, %v", out, err)
	}
	var back wrap
	if err := config.Unmarshal(out, &back); err != nil || back.D.D() != 90*time.Second || back.P.D() != 1500*time.Millisecond {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}

func TestOriginalDstJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.OriginalDst
		err  string
	}{
		{`"redirect"`, config.OriginalDstRedirect, ""},
		{`"TPROXY"`, config.OriginalDstTProxy, ""},
		{`""`, config.OriginalDstOff, ""},
		{`true`, config.OriginalDstRedirect, ""},
		{`false`, config.OriginalDstOff, ""},
		{`"dnat"`, "", `unknown "dnat" (known: "redirect", "tproxy", "" or false for off, true for redirect)`},
		{`1`, "", `expected "redirect", "tproxy", "" or a boolean, got number`},
	} {
		o := config.OriginalDst("x")
		err := o.UnmarshalJSON([]byte(tc.in))
		switch {
		case tc.err == "" && (err != nil || o != tc.want):
			t.Errorf("UnmarshalJSON(%s) = %q, %v; want %q", tc.in, o, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("UnmarshalJSON(%s) = %v; want error containing %q", tc.in, err, tc.err)
		}
	}
}

func TestStringsDecodeLikeEncodingJSON(t *testing.T) {
	// Escapes, surrogate pairs, lone surrogates and invalid UTF-8 decode as encoding/json
	// decodes them.
	data := []byte("{\"servers\":[{\"server_name\":\"a\\u00e9\\ud83d\\ude00\\ud800x\\/\\n\xff\"}]}")
	c := assertDecodersAgree(t, data, true)
	if got := c.Servers[0].ServerName; got != "aé😀\ufffdx/\n\ufffd" {
		t.Errorf("server_name = %q", got)
	}
}

func TestApplyDefaults(t *testing.T) {
	c, _, err := config.Parse([]byte(`{
		"servers":[{"listeners":[{"name":"l","address":"127.0.0.1:1"},{"name":"m","address":"127.0.0.1:2","network":"udp","max_connections":5,"connection_idle_timeout":"0s"}]}],
		"cluster_manager":{"clusters":[
			{"name":"a","hosts":[{"address":"127.0.0.1:1"},{"address":"127.0.0.1:2","weight":7}]},
			{"name":"b","type":"STRICT_DNS","lb_type":"LB_RANDOM","connect_timeout":"1s","max_connect_attempts":9,"pick_timeout":"0s"},
			{"name":"c","type":"ORIGINAL_DST"}]}}`), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	first, _ := json.Marshal(c)
	c.ApplyDefaults()
	if again, _ := json.Marshal(c); !bytes.Equal(first, again) {
		t.Errorf("ApplyDefaults is not idempotent")
	}
	l, m := c.Servers[0].Listeners[0], c.Servers[0].Listeners[1]
	a, b, o := c.ClusterManager.Clusters[0], c.ClusterManager.Clusters[1], c.ClusterManager.Clusters[2]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"drain timeout", c.Drain.Timeout.D(), config.DefaultDrainTimeout},
		{"network", l.Network, "tcp"},
		{"max connections", l.MaxConnections, 65536},
		{"buffer limit left to the connection", l.PerConnBufferLimitBytes, uint32(0)},
		{"idle timeout", l.ConnectionIdleTimeout.D(), time.Hour},
		{"explicit network", m.Network, "udp"},
		{"explicit max connections", m.MaxConnections, 5},
		{"explicit idle off", m.ConnectionIdleTimeout.D(), time.Duration(0)},
		{"send timeout", l.SendTimeout.D(), 5 * time.Minute},
		{"cluster type", a.Type, "SIMPLE"},
		{"lb type", a.LBType, "LB_ROUNDROBIN"},
		{"connect timeout", a.ConnectTimeout.D(), 5 * time.Second},
		{"connect attempts", a.MaxConnectAttempts, uint32(3)},
		{"pick timeout", a.PickTimeout.D(), time.Second},
		{"weight unset", a.Hosts[0].Weight, uint32(1)},
		{"weight set", a.Hosts[1].Weight, uint32(7)},
		{"simple has no dns refresh", a.DNSRefreshRate == nil, true},
		{"explicit lb", b.LBType, "LB_RANDOM"},
		{"explicit connect timeout", b.ConnectTimeout.D(), time.Second},
		{"explicit attempts", b.MaxConnectAttempts, uint32(9)},
		{"explicit pick timeout 0", b.PickTimeout.D(), time.Duration(0)},
		{"dns refresh", b.DNSRefreshRate.D(), 5 * time.Second},
		{"original dst lb", o.LBType, "LB_ORIGINAL_DST"},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v (%T); want %v (%T)", tc.name, tc.got, tc.got, tc.want, tc.want)
		}
	}
}

// schemaTestConfig is the config type of the stream filter TestStreamFilterConfigSchema
// registers.
type schemaTestConfig struct {
	Limit int `json:"limit"`
}

// TestStreamFilterConfigSchema: a stream filter that registered its config type gets the
// inside of stream_filters[].config and of a route's per_filter_config entry checked like
// the rest of the file: unknown keys are warnings (errors under strict), wrong JSON types
// errors, each with its path.
func TestStreamFilterConfigSchema(t *testing.T) {
	config.RegisterStreamFilterConfig("schema_test", schemaTestConfig{})
	data := []byte(`{"servers":[{
	  "listeners":[{"name":"l","address":"127.0.0.1:1","stream_filters":[{"type":"schema_test","config":{"limt":1}}]}],
	  "routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
	    {"match":{"prefix":"/"},"route":{"cluster_name":"c"},"per_filter_config":{"schema_test":{"limit":"x"},"other":{"anything":1}}}]}]}]}]}`)
	_, warnings, err := config.Parse(data, config.ParseOptions{})
	if !find(warnings, "servers[0].listeners[0].stream_filters[0].config.limt", "did you mean limit?") {
		t.Errorf("no warning for the misspelt key; warnings %v", warnings)
	}
	if err == nil || !strings.Contains(err.Error(), `servers[0].routers[0].virtual_hosts[0].routers[0].per_filter_config.schema_test.limit: expected`) {
		t.Errorf("per_filter_config with a string for an int: err = %v", err)
	}
	_, _, err = config.Parse(data, config.ParseOptions{Strict: true})
	if err == nil || !strings.Contains(err.Error(), "stream_filters[0].config.limt: unknown field") {
		t.Errorf("strict: err = %v; want the unknown key as an error", err)
	}
}

// TestExtendConfigSchema: an extends type that registered its config type gets the inside
// of its "config" checked: an unknown key is a warning with its path, an error under strict.
func TestExtendConfigSchema(t *testing.T) {
	config.RegisterExtendConfig("schema_test_extend", schemaTestConfig{})
	data := []byte(`{"extends":[{"type":"schema_test_extend","config":{"limt":1}}]}`)
	_, warnings, _ := config.Parse(data, config.ParseOptions{})
	if !find(warnings, "extends[0].config.limt", "did you mean limit?") {
		t.Errorf("no warning for the misspelt key; warnings %v", warnings)
	}
	if _, _, err := config.Parse(data, config.ParseOptions{Strict: true}); err == nil || !strings.Contains(err.Error(), "extends[0].config.limt: unknown field") {
		t.Errorf("strict: err = %v", err)
	}
}
