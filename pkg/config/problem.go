package config

import (
	"strconv"
	"strings"
)

// Problem is one finding about a config: a warning or an error, with the JSON path of the
// field it is about. Paths use the canonical snake_case keys of the json tags, whatever case
// the file wrote: "cluster_manager.clusters[1].lb_type". RootPath ("$") names the whole
// document.
type Problem struct {
	Path string
	Msg  string
}

// RootPath is the Path of a problem about the document as a whole (syntax errors, for one).
const RootPath = "$"

// Error returns "path: message".
func (p Problem) Error() string { return p.Path + ": " + p.Msg }

// Problems is a list of errors found in one pass; as an error it prints one line per problem.
// Parse, Load and Validate return their errors as a Problems value, so callers can list them
// one by one with errors.As.
type Problems []Problem

// Error returns the problems one per line.
func (ps Problems) Error() string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// err returns ps as an error, or nil when it is empty.
func (ps Problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// report collects warnings and errors.
type report struct {
	warnings []Problem
	errors   Problems
}

func (r *report) warn(path, msg string) { r.warnings = append(r.warnings, Problem{path, msg}) }
func (r *report) fail(path, msg string) { r.errors = append(r.errors, Problem{path, msg}) }
func (r *report) merge(o report) {
	r.warnings = append(r.warnings, o.warnings...)
	r.errors = append(r.errors, o.errors...)
}
func (r *report) result() ([]Problem, error) { return r.warnings, r.errors.err() }

// Path building. Keys that are plain identifiers join with a dot; others are quoted in
// brackets (map keys such as per_filter_config's can be anything).

func field(parent, key string) string {
	if !plainKey(key) {
		return parent + "[" + strconv.Quote(key) + "]"
	}
	if parent == RootPath || parent == "" {
		return key
	}
	return parent + "." + key
}

// at joins a dotted run of plain keys: at(p, "route.cluster_name").
func at(parent, dotted string) string {
	for key := range strings.SplitSeq(dotted, ".") {
		parent = field(parent, key)
	}
	return parent
}

func index(parent string, i int) string {
	if parent == "" {
		parent = RootPath
	}
	return parent + "[" + strconv.Itoa(i) + "]"
}

func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
