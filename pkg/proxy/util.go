package proxy

import "unsafe"

// bstr views b as a string without copying; valid while b is unchanged.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
