package proxy

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
)

// SetSniffTimeout shortens an Auto filter's wait for the first bytes.
func SetSniffTimeout(f filter.NetworkFilter, d time.Duration) {
	switch a := f.(type) {
	case *auto:
		a.sniffTimeout = d
	case *loopAuto:
		a.sniffTimeout = d
	}
}
