package testutil

import "strings"

// Lines returns the lines of s that contain sub, joined by newlines: the part of a long
// output (logs, metrics) worth quoting in a failure.
func Lines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
