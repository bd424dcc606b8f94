package cluster

// ActiveCheckers returns the number of running health-checker goroutines of m.
func ActiveCheckers(m *Manager) int64 { return m.checkers.Load() }

// Ejections returns the host's outlier ejection count (the ejection-time multiplier).
func Ejections(h *Host) uint32 {
	h.st.c.mu.Lock()
	defer h.st.c.mu.Unlock()
	return h.st.ejections
}
