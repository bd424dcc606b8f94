package tcpproxy

// SetPumpBudget sets the bytes a loop session's direction moves per turn, for tests that
// need the resume path; it returns the previous value. Call it while no loop runs.
func SetPumpBudget(n int) int {
	old := pumpBudget
	pumpBudget = n
	return old
}
