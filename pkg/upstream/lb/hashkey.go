package lb

import "net/netip"

// HashIP is the hash key for a client address (Envoy's source_ip hash policy): FNV-1a
// over the 16-byte form, so an IPv4 address and its v4-mapped form hash alike once
// unmapped by the caller. It does not allocate.
func HashIP(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
