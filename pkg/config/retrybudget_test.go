package config_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// budgetDoc is a config with two clusters, the second with retry_budget rb.
func budgetDoc(rb string) string {
	return doc(filterListener("tcp", "tcp_proxy", `{"routes":[{"cluster":"a"},{"cluster":"b"}]}`), "",
		`{"name":"a","hosts":[{"address":"127.0.0.1:1"}]},{"name":"b","retry_budget":`+rb+`,"hosts":[{"address":"127.0.0.1:2"}]}`)
}

func TestRetryBudgetBroken(t *testing.T) {
	const p = "cluster_manager.clusters[1].retry_budget"
	for _, tc := range []struct {
		name   string
		rb     string
		strict bool
		path   string
		phrase string
	}{
		{"ratio over 1", `{"retry_ratio":1.5}`, false, p + ".retry_ratio", "1.5 is outside 0-1"},
		{"ratio negative", `{"retry_ratio":-0.2}`, false, p + ".retry_ratio", "-0.2 is outside 0-1"},
		{"ratio a string", `{"retry_ratio":"20%"}`, false, p + ".retry_ratio", "expected a number"},
		{"min negative", `{"min_retries_per_second":-1}`, false, p + ".min_retries_per_second", "expected a non-negative integer"},
		{"ttl too short", `{"ttl":"500ms"}`, false, p + ".ttl", "500ms is outside 1s-1m0s"},
		{"ttl too long", `{"ttl":"2m"}`, false, p + ".ttl", "2m0s is outside 1s-1m0s"},
		{"ttl 0", `{"ttl":"0s"}`, false, p + ".ttl", "0s is outside 1s-1m0s"},
		{"ttl not a duration", `{"ttl":"soon"}`, false, p + ".ttl", `invalid duration "soon"`},
		{"disabled with ratio", `{"disabled":true,"retry_ratio":0.1}`, false, p + ".retry_ratio", "set with disabled true"},
		{"disabled with ttl", `{"disabled":true,"ttl":"5s"}`, false, p + ".ttl", "set with disabled true"},
		{"disabled not a bool", `{"disabled":"yes"}`, false, p + ".disabled", "expected true or false"},
		{"strict unknown key", `{"retry_raito":0.3}`, true, p + ".retry_raito", "did you mean retry_ratio?"},
		{"strict Envoy's name", `{"budget_percent":20}`, true, p + ".budget_percent", "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			warnings, errs := check(t, budgetDoc(tc.rb), tc.strict)
			if !find(errs, tc.path, tc.phrase) {
				t.Errorf("want an error at %s containing %q\nerrors:\n%v\nwarnings: %v", tc.path, tc.phrase, errs, warnings)
			}
		})
	}
}

func TestRetryBudgetWarnings(t *testing.T) {
	warnings, errs := check(t, budgetDoc(`{"retry_ratio":0,"min_retries_per_second":0}`), false)
	if len(errs) > 0 {
		t.Fatalf("errors:\n%v", errs)
	}
	if !find(warnings, "cluster_manager.clusters[1].retry_budget.retry_ratio", "allows no retry") {
		t.Errorf("no warning for a budget that allows nothing; got %v", warnings)
	}
	// Either one alone at 0 is a normal choice.
	for _, rb := range []string{`{"retry_ratio":0}`, `{"min_retries_per_second":0}`} {
		if w, errs := check(t, budgetDoc(rb), true); len(w) > 0 || len(errs) > 0 {
			t.Errorf("%s: warnings %v, errors %v", rb, w, errs)
		}
	}
}

// A valid block decodes as written, strict and without warnings; absent stays nil (the
// default budget) and {"disabled":true} is accepted alone.
func TestRetryBudgetBlock(t *testing.T) {
	for _, tc := range []struct {
		rb   string
		want *config.RetryBudget
	}{
		{`{"retry_ratio":0.25,"min_retries_per_second":3,"ttl":"30s"}`, &config.RetryBudget{RetryRatio: new(0.25), MinRetriesPerSecond: new(uint32(3)), TTL: durPtr(30 * time.Second)}},
		{`{"retry_ratio":1,"ttl":"1m"}`, &config.RetryBudget{RetryRatio: new(1.0), TTL: durPtr(time.Minute)}},
		{`{"ttl":"1s"}`, &config.RetryBudget{TTL: durPtr(time.Second)}},
		{`{}`, &config.RetryBudget{}},
		{`{"disabled":true}`, &config.RetryBudget{Disabled: true}},
	} {
		data := budgetDoc(tc.rb)
		if w, errs := check(t, data, true); len(errs) > 0 || len(w) > 0 {
			t.Fatalf("%s: warnings %v\nerrors:\n%v", tc.rb, w, errs)
		}
		c, _, err := config.Parse([]byte(data), config.ParseOptions{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ClusterManager.Clusters[1].RetryBudget; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s decoded as %+v; want %+v", tc.rb, got, tc.want)
		}
		if c.ClusterManager.Clusters[0].RetryBudget != nil {
			t.Errorf("absent retry_budget decoded as %+v", c.ClusterManager.Clusters[0].RetryBudget)
		}
	}
}

func durPtr(d time.Duration) *config.Duration { v := config.Duration(d); return &v }
